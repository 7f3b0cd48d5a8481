"""``python -m bench COMMAND``: ``headline`` reruns the README's figures (see bench/headline.py)."""

import sys

from bench import headline

COMMANDS = {"headline": headline.main}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        print(f"usage: python -m bench {{{','.join(COMMANDS)}}} [--help]", file=sys.stderr)
        raise SystemExit(2)
    raise SystemExit(COMMANDS[sys.argv[1]](sys.argv[2:]))
