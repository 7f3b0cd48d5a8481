#!/usr/bin/env bash
# LoRA Studio installer for Macs with Apple silicon (M1 or newer): torch from PyPI with the MPS backend
# for preview and training. The steps are the Linux installer's (same options: --prefix, --dry-run,
# --uninstall, ...); on macOS it adds ~/Applications/LoRA Studio.app instead of a .desktop entry.
# The torch choice (mps) is made in lora_studio/install_plan.py, which the tests run.
set -euo pipefail
if [ "$(uname -s)" != Darwin ]; then
  echo "error: this installer is for macOS; on Linux run packaging/linux/install.sh" >&2; exit 1
fi
if [ "$(uname -m)" != arm64 ]; then
  echo "error: LoRA Studio needs a Mac with Apple silicon (M1 or newer); PyTorch no longer ships for Intel Macs." >&2
  exit 1
fi
# /usr/bin/python3 is a stub until the Command Line Tools are installed; it is only used to run the
# installer's decision code (the app gets its own Python environment through uv).
if ! "${LORA_STUDIO_PYTHON:-python3}" -c 'import sys' >/dev/null 2>&1; then
  echo "error: no working python3 yet." >&2
  echo "what to do: run 'xcode-select --install' (or install Python from python.org), then run this again." >&2
  exit 1
fi
exec bash "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/../linux/install.sh" "$@"
