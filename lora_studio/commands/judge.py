"""`lora-studio judge`."""

from __future__ import annotations

DESCRIPTION = ("Score pictures with the demo world's judge: for each picture, the shape, colour, subject (sks) and "
               "style (zebra) it sees, its subject score (0 = a plain shape, 1 = the subject), and how well that "
               "agrees with the prompt it was made from.")


def add_arguments(parser) -> None:
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files or folders of images")
    parser.add_argument("--prompt", action="append", default=[], metavar="P",
                        help="the prompt the images were made from: once for all images, or once per image")
    parser.add_argument("--json", action="store_true", help="print the full result as JSON")
    parser.add_argument("--judge", metavar="DIR", help="judge folder (default: the bundled one)")


def _collect(paths) -> list:
    from pathlib import Path

    from lora_studio.errors import LoraStudioError

    files = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            files += sorted(f for f in p.iterdir() if f.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp", ".bmp"))
        elif p.is_file():
            files.append(p)
        else:
            raise LoraStudioError(f"no such image or folder: {p}", "check the path.")
    if not files:
        raise LoraStudioError("no images found", "pass image files or folders holding .png/.jpg images.")
    return files


def run(args) -> int:
    import json

    from lora_studio.core.demo.judge import Judge
    from lora_studio.errors import LoraStudioError

    files = _collect(args.images)
    prompts = args.prompt or [""]
    if len(prompts) not in (1, len(files)):
        raise LoraStudioError(f"{len(files)} images but {len(prompts)} --prompt values",
                              "give --prompt once for all images, or once per image in the same order.")
    judge = Judge.load(args.judge)
    result = judge.score(files, prompts[0] if len(prompts) == 1 else prompts)
    for row, path in zip(result["per_prompt"], files):
        row["image"] = str(path)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    for row in result["per_prompt"]:
        p = row["predicted"]
        seen = "the sks subject" if p["subject"] else f"{p['colour']} {p['shape']}"
        seen += f" (subject score {p['subject_score']:.2f})"
        seen += " in zebra style" if p["style"] else ""
        ok = "ok" if all(row["match"].values()) else "MISMATCH"
        print(f"{row['image']}: {seen}  [{ok}]")
    summary = {k: result[k] for k in ("colour_accuracy", "shape_accuracy", "subject_share", "subject_score",
                                      "style_share")}
    print("summary: " + ", ".join(f"{k}={'n/a' if v is None else f'{v:.3f}'}" for k, v in summary.items()))
    return 0
