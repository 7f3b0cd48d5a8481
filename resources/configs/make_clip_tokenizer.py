"""Regenerate clip_tokenizer/{vocab.json,merges.txt} from the BPE vocabulary open_clip_torch ships.

Run once by a maintainer (open_clip_torch is not a runtime dependency):
    pip download --no-deps open_clip_torch && unzip -j open_clip_torch-*.whl '*/bpe_simple_vocab_16e6.txt.gz'
    python resources/configs/make_clip_tokenizer.py bpe_simple_vocab_16e6.txt.gz
The result is the tokenizer of OpenAI CLIP ViT-L/14 that SD 1.x, SD 2.x and SDXL use (49408 tokens).
"""

import gzip
import json
import sys
from pathlib import Path

N_MERGES = 49152 - 256 - 2


def byte_table() -> list[str]:
    # GPT-2/CLIP's reversible byte -> printable character table.
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return [table[b] for b in sorted(table, key=lambda b: (b not in keep, keep.index(b) if b in keep else b))]


def main(bpe_gz: str) -> None:
    lines = gzip.open(bpe_gz, "rt", encoding="utf-8").read().split("\n")[1:N_MERGES + 1]
    merges = [tuple(line.split()) for line in lines]
    chars = byte_table()
    tokens = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    out = Path(__file__).with_name("clip_tokenizer")
    out.mkdir(exist_ok=True)
    (out / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}, ensure_ascii=False,
                                               separators=(",", ":")), encoding="utf-8")
    (out / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1])
