"""`lora-studio caption DIR --model M`."""

from __future__ import annotations

DESCRIPTION = ("Draft captions for a dataset folder with a local captioning model, and save them in the format the "
               "folder uses (.txt sidecars or metadata.jsonl). M is `demo` (the demo world's captioner), a "
               "transformers image-to-text folder (BLIP, BLIP-2, GIT, Florence-2), a booru tagger folder "
               "(model.onnx + selected_tags.csv, WD14 / WD v3), or a Hugging Face repo id (downloaded once, cached). "
               "Ctrl-C stops after the current batch; what was drafted is kept.")


def add_arguments(parser) -> None:
    from lora_studio.core.caption.base import MODES

    parser.add_argument("dir", metavar="DIR", help="dataset folder")
    parser.add_argument("--model", required=True, metavar="M", help="demo, a model folder, or a repo id")
    parser.add_argument("--mode", choices=MODES, default="empty",
                        help="empty: only pictures without a caption (default); overwrite: replace every caption; "
                        "append / prepend: add the draft after / before the caption there")
    parser.add_argument("--trigger", default="", metavar="WORD",
                        help="put WORD first in every caption that lacks it")
    parser.add_argument("--threshold", type=float, default=0.35, metavar="P",
                        help="taggers: lowest probability of a general tag (default 0.35)")
    parser.add_argument("--character-threshold", type=float, default=0.85, metavar="P",
                        help="taggers: lowest probability of a character tag (default 0.85)")
    parser.add_argument("--prompt", default=None,
                        help="image-to-text models: a prompt the caption continues (Florence-2: a task token)")


def run(args) -> int:
    from lora_studio.commands.train import ProgressDisplay, stop_on_interrupt
    from lora_studio.core.caption import caption_folder
    from lora_studio.errors import LoraStudioError

    for name in ("threshold", "character_threshold"):
        if not 0.0 <= getattr(args, name) <= 1.0:
            flag = "--" + name.replace("_", "-")
            raise LoraStudioError(f"{flag} {getattr(args, name)} is not a probability.",
                                  f"give {flag} between 0 and 1.")
    display = ProgressDisplay()
    flag, restore = stop_on_interrupt()
    try:
        result = caption_folder(args.dir, args.model, mode=args.mode, trigger=args.trigger, emit=display,
                                stop=flag.is_set, general_threshold=args.threshold,
                                character_threshold=args.character_threshold, prompt=args.prompt)
    finally:
        restore()
        display.close()
    state = "stopped: " if result["stopped"] else ""
    print(f"{state}{result['changed']} of {result['images']} captions written ({result['drafted']} drafted) "
          f"in {result['seconds']:.1f} s.")
    return 0
