"""folder_lock excludes other processes and leaves nothing in the locked folder."""

import subprocess
import sys

from lora_studio.core.locks import folder_lock, lock_path_for

PROBE = ("import sys, filelock; from lora_studio.core.locks import lock_path_for\n"
         "try:\n"
         "    filelock.FileLock(lock_path_for(sys.argv[1])).acquire(blocking=False)\n"
         "    print('acquired')\n"
         "except filelock.Timeout:\n"
         "    print('held')\n")


def _probe(folder) -> str:
    return subprocess.run([sys.executable, "-c", PROBE, str(folder)], capture_output=True, text=True,
                          check=True).stdout.strip()


def test_folder_lock_is_held_against_another_process(tmp_path, monkeypatch):
    monkeypatch.setenv("LORA_STUDIO_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "data"
    data.mkdir()
    with folder_lock(data):
        assert _probe(data) == "held"
    assert _probe(data) == "acquired"
    assert list(data.iterdir()) == []  # the lock file lives in the cache folder
    assert lock_path_for(data).parent == tmp_path / "cache" / "lora-studio" / "locks"
