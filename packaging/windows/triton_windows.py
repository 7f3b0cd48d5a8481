"""Which triton-windows to install next to the torch the Windows installer just installed.

torch's Windows wheels carry no Triton, so the engine's Triton kernels (lora_studio/core/accel) fall back to
eager code there. triton-windows (PyPI) fills the gap, but each torch minor works only with one Triton minor,
so the pin follows the torch that is installed. bootstrap.ps1 runs this file with the installer's Python
(standard library only) and installs what it prints; nothing here ever fails an install:

    python triton_windows.py TORCH_VERSION TORCH_BUILD     # e.g. 2.13.0+cu130 cu130
    -> {"requirement": "triton-windows>=3.7,<3.8", "reason": "..."}   (requirement null: install nothing)
"""

from __future__ import annotations

import json
import re
import sys

# torch minor -> Triton minor. 2.6-2.10: the triton-windows README's PyTorch/Triton table ("Each PyTorch minor
# version is only guaranteed to work with a specific Triton minor version"). 2.11 (Triton 3.6) and 2.12
# (Triton 3.7): the Triton each torch release names in its .ci/docker/triton_version.txt. 2.13: Triton 3.7,
# between 2.12's 3.7 and 2.14's 3.8; not stated by a source read when this was written, so check it first
# when a Windows install reports the kernels failing their self-check.
TRITON_FOR_TORCH: dict[tuple[int, int], tuple[int, int]] = {
    (2, 6): (3, 2),
    (2, 7): (3, 3),
    (2, 8): (3, 4),
    (2, 9): (3, 5),
    (2, 10): (3, 6),
    (2, 11): (3, 6),
    (2, 12): (3, 7),
    (2, 13): (3, 7),
}


def torch_minor(version: str) -> tuple[int, int] | None:
    """(2, 13) for "2.13.0+cu130", "2.13.0" or "2.13.0.dev20260101"; None for anything else."""
    m = re.match(r"\s*(\d+)\.(\d+)", version or "")
    return (int(m.group(1)), int(m.group(2))) if m else None


def choose(torch_version: str, build: str) -> tuple[str | None, str]:
    """(pip requirement or None, why): triton-windows for a CUDA torch whose minor is in the table."""
    cuda = re.fullmatch(r"cu(\d+)", build or "")
    if cuda is None:
        return None, f"the torch build is {build or 'unknown'}, not CUDA: Triton kernels run on NVIDIA GPUs only"
    if int(cuda.group(1)) < 120:  # the wheels bundle a CUDA 12 toolchain and need a CUDA 12+ torch
        return None, f"the torch build is {build}; triton-windows needs a CUDA 12 or newer build"
    minor = torch_minor(torch_version)
    if minor is None:
        return None, f"cannot read the torch version {torch_version!r}"
    triton = TRITON_FOR_TORCH.get(minor)
    if triton is None:
        return None, (f"no known triton-windows for torch {minor[0]}.{minor[1]} (known: "
                      f"{', '.join(f'{a}.{b}' for a, b in TRITON_FOR_TORCH)})")
    low, high = f"{triton[0]}.{triton[1]}", f"{triton[0]}.{triton[1] + 1}"
    return f"triton-windows>={low},<{high}", f"torch {minor[0]}.{minor[1]} works with Triton {low}"


def main(argv: list[str]) -> int:
    requirement, reason = choose(argv[0] if argv else "", argv[1] if len(argv) > 1 else "")
    print(json.dumps({"requirement": requirement, "reason": reason}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
