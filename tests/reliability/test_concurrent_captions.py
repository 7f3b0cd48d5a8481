"""Two app windows (here: two processes) editing one dataset never lose each other's caption writes."""

import json
import subprocess
import sys
import textwrap

from PIL import Image

from lora_studio.core.dataset import Dataset

N = 40

WRITER = textwrap.dedent("""
    import sys
    from lora_studio.core.dataset import Dataset
    root, who, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    ds = Dataset.open(root)   # opened once, like a window that stays open: its view goes stale
    mine = [i for i, item in enumerate(ds.items) if item.name.startswith(who)]
    for k in range(n):
        i = mine[k % len(mine)]
        ds.set_caption(i, f"{who} edit {k}")
""")


def test_two_processes_editing_one_metadata_file_lose_nothing(tmp_path):
    root = tmp_path / "ds"
    root.mkdir()
    lines = []
    for who in ("a", "b"):
        for k in range(4):
            name = f"{who}{k}.png"
            Image.new("RGB", (8, 8)).save(root / name)
            lines.append(json.dumps({"file_name": name, "text": "original"}))
    (root / "metadata.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    env_cache = {"LORA_STUDIO_CACHE": str(tmp_path / "cache")}
    import os

    env = {**os.environ, **env_cache}
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(root), who, str(N)], env=env)
             for who in ("a", "b")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    ds = Dataset.open(root)
    captions = {item.name: item.caption for item in ds.items}
    # The last edit of each process to each of its images is on disk: nothing was overwritten by the other.
    for who in ("a", "b"):
        for k in range(4):
            last = max(j for j in range(N) if j % 4 == k)
            assert captions[f"{who}{k}.png"] == f"{who} edit {last}", captions
    assert len((root / "metadata.jsonl").read_text(encoding="utf-8").splitlines()) == 8
