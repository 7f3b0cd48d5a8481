"""The demo's before/after picture: the subject prompt at LoRA weight 0 / 0.25 / 0.5 / 0.75 / 1 and the class
prompt at 1, on the first judged seeds, each row labelled with its judged score, and a one-line verdict on top.
Cells are the 64 px pictures enlarged 2.5x, so a hobbyist sees the shapes without zooming."""

from __future__ import annotations

from lora_studio.core.demo.recipe import BARS, CLASS_PROMPT, SUBJECT_PROMPT, WEIGHTS

CELL = 160
SEEDS = 4


def verdict(model: str, scores: dict, passed: dict) -> str:
    """One line: did the LoRA learn the subject, in the judge's numbers."""
    ok = bool(passed) and all(passed.values())
    _, bar = BARS[("subject", model)]["subject_at_1"]
    line = (f"{'PASSED' if ok else 'MISSED'}: the subject in {scores['subject_at_1']:.0%} of pictures at LoRA 1 "
            f"(bar {bar:.0%}), in {scores['subject_at_0']:.0%} without the LoRA")
    missed = [k for k, v in passed.items() if not v]
    return line + (f"; missed: {', '.join(missed)}" if missed else "")


def before_after(images: dict, scores: dict, continuous: dict, line: str):
    """``images`` by score name (``subject_at_0.5``, ``class_prompt_subject_at_1``) -> one labelled PIL image."""
    from PIL import Image, ImageDraw

    from lora_studio.core.inference.engine import draw_text, label_font, labelled_grid, text_width

    def cells(key):
        return [im.convert("RGB").resize((CELL, CELL), Image.Resampling.BICUBIC) for im in images[key][:SEEDS]]

    rows = []
    for w in WEIGHTS:
        key = f"subject_at_{w:g}"
        if key in images:
            rows.append((f'"{SUBJECT_PROMPT}"  LoRA {w:g}:  score {continuous.get(key, 0):.2f}, '
                         f'subject in {scores.get(key, 0):.0%}', cells(key)))
    key = "class_prompt_subject_at_1"
    if key in images:
        rows.append((f'"{CLASS_PROMPT}" (class)  LoRA 1:  subject in {scores.get(key, 0):.0%}', cells(key)))
    font = label_font()
    grid = labelled_grid(rows, [f"seed {s}" for s in range(len(rows[0][1]))], pad=6, font=font)
    title_font = label_font(20)
    head = int(title_font.size * 2)
    out = Image.new("RGB", (max(grid.width, text_width(line, title_font) + 12), grid.height + head), "white")
    out.paste(grid, (0, head))
    colour = (20, 120, 40) if line.startswith("PASSED") else (180, 30, 30)
    draw_text(ImageDraw.Draw(out), (6, head // 4), line, title_font, fill=colour)
    return out
