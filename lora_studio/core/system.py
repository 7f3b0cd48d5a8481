"""What torch sees on this machine, and a start-up check against what the installer chose.

The installer (packaging/) writes ``install.json`` next to the app environment (``<prefix>/install.json``
with the environment in ``<prefix>/env``): the torch build it picked (cu126, cu130, cpu, mps, ...), the
device it expects and the GPUs nvidia-smi reported. ``torch_check()`` compares that with what torch sees
now, so a broken driver or a swapped GPU shows up as a message with advice rather than a slow CPU run.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

RECORD_ENV = "LORA_STUDIO_INSTALL_RECORD"
REINSTALL = "run the LoRA Studio installer again (it repairs the environment and picks the torch build for your GPU)"


# torch's CUDA allocator settings for this app, unless the user set their own: growable segments instead of
# fixed-size ones, so memory freed between the preview's and the trainer's differently sized tensors is not
# stranded in half-used blocks. On a small card that is the margin (SDXL preview in 8 bits: 5.5 GiB reserved
# for 4.8 allocated with fixed segments, 5.2 with these; bench/NOTES.md). Read when CUDA starts: set before that.
ALLOCATOR_SETTINGS = "expandable_segments:True"


def allocator_defaults(environ=os.environ) -> None:
    if "PYTORCH_ALLOC_CONF" not in environ and "PYTORCH_CUDA_ALLOC_CONF" not in environ:
        environ["PYTORCH_CUDA_ALLOC_CONF"] = ALLOCATOR_SETTINGS


def user_cache_dir(environ=os.environ, platform: str = sys.platform) -> Path:
    """This user's cache folder for the app (kept across reboots, unlike the temp folder)."""
    home = Path(environ.get("HOME") or environ.get("USERPROFILE") or Path.home())
    if platform.startswith("win"):
        base = Path(environ.get("LOCALAPPDATA") or home / "AppData" / "Local")
    elif platform == "darwin":
        base = home / "Library" / "Caches"
    else:
        base = Path(environ.get("XDG_CACHE_HOME") or home / ".cache")
    return base / "lora-studio"


def compile_cache_defaults(environ=os.environ, platform: str = sys.platform, create: bool = True) -> None:
    """Keep torch.compile's cache (SDXL's compiled blocks: 17-27 s to build cold on H100 hosts, 13 s warm) in
    the app's cache folder instead of the temp folder, which many systems empty at boot: a later run with the
    same bucket shapes then loads the compiled code. The user's own setting wins; a folder that cannot be
    made (a read-only home) leaves torch's default."""
    if "TORCHINDUCTOR_CACHE_DIR" in environ:
        return
    path = user_cache_dir(environ, platform) / "torchinductor"
    if create:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError:
            return
    environ["TORCHINDUCTOR_CACHE_DIR"] = str(path)


@dataclass(frozen=True)
class GpuInfo:
    name: str
    total_memory: int                              # bytes
    compute_capability: tuple[int, int] | None     # None on Apple MPS
    backend: str = "cuda"                          # cuda / mps


def gpu_info(index: int = 0) -> GpuInfo | None:
    """The accelerator torch would train on, or None when it sees only the CPU."""
    import torch

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(index)
        return GpuInfo(props.name, int(props.total_memory), (int(props.major), int(props.minor)))
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        total = torch.mps.recommended_max_memory() if hasattr(torch.mps, "recommended_max_memory") else 0
        return GpuInfo("Apple MPS", int(total), None, backend="mps")
    return None


def training_device():
    """The device a run trains on: a CUDA GPU, else Apple's MPS, else the CPU (never MPS called CUDA)."""
    import torch

    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def working_precision(device) -> str:
    """What a device computes in when nothing else is asked: "bf16" on a CUDA card that has it (no loss scaler,
    so a captured step can run), "fp16" on older CUDA cards, "no" (fp32) elsewhere. Training's
    ``mixed_precision = "auto"`` and the preview's default dtype both follow it."""
    import torch

    if torch.device(device).type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "no"


def precision_dtype(precision: str):
    """The torch dtype of a ``mixed_precision`` name ("no", "fp16", "bf16")."""
    import torch

    return {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


def memory_reading(device) -> tuple[int, int, int]:
    """(used, peak, total) bytes of the training device's memory; zeros on the CPU."""
    import torch

    if device.type == "cuda":
        return (torch.cuda.memory_allocated(device), torch.cuda.max_memory_allocated(device),
                torch.cuda.get_device_properties(device).total_memory)
    if device.type == "mps":
        used = torch.mps.current_allocated_memory()
        # MPS keeps no peak; the driver's allocation (what the process holds) is the closest reading.
        peak = max(used, torch.mps.driver_allocated_memory())
        total = torch.mps.recommended_max_memory() if hasattr(torch.mps, "recommended_max_memory") else 0
        return int(used), int(peak), int(total)
    return 0, 0, 0


@dataclass(frozen=True)
class TorchCheck:
    ok: bool
    message: str
    advice: str = ""
    expected: str = ""   # the installer's torch build ("" when the app was not installed by it)

    def summary(self) -> str:
        return self.message if self.ok or not self.advice else f"{self.message}\nwhat to do: {self.advice}"


def find_install_record() -> Path | None:
    if os.environ.get(RECORD_ENV):
        path = Path(os.environ[RECORD_ENV])
        return path if path.is_file() else None
    path = Path(sys.prefix).resolve().parent / "install.json"
    if not path.is_file():
        return None
    try:
        env = json.loads(path.read_text(encoding="utf-8")).get("env", "")
    except (OSError, ValueError):
        return None
    # only the record of the environment we run in, never a stray install.json in a parent folder
    return path if env and Path(env).resolve() == Path(sys.prefix).resolve() else None


def _sm(cc: tuple[int, int]) -> str:
    return f"sm_{cc[0]}{cc[1]}"


def _has_kernels(arch_list: list[str], cc: tuple[int, int]) -> bool:
    # SASS for sm_XY runs on the same major with an equal or higher minor; PTX (compute_XY) JIT-compiles
    # for anything newer.
    for arch in arch_list:
        kind, _, num = arch.partition("_")
        if not num.isdigit() or len(num) < 2:
            continue
        major, minor = int(num[:-1]), int(num[-1])
        if (kind == "sm" and major == cc[0] and minor <= cc[1]) or (kind == "compute" and (major, minor) <= cc):
            return True
    return False


def torch_check(record_path: str | Path | None = None) -> TorchCheck:
    """Does torch see the device the installer chose? Never raises: problems come back as a message."""
    path = Path(record_path) if record_path else find_install_record()
    record: dict = {}
    if path is not None:
        try:
            record = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            return TorchCheck(False, f"the install record {path} cannot be read ({exc}).", REINSTALL)
    build, device = record.get("build", ""), record.get("device", "")
    try:
        import torch
    except Exception as exc:  # a broken environment: say so instead of failing later mid-training
        return TorchCheck(False, f"torch does not import ({type(exc).__name__}: {exc}).", REINSTALL, build)

    version = torch.__version__
    if device == "cuda":
        gpus = record.get("gpus") or [{}]
        want = gpus[0].get("name") or "your NVIDIA GPU"
        if not torch.version.cuda:
            return TorchCheck(False, f"torch {version} is a CPU build, but the installer chose {build} for {want}.",
                              REINSTALL, build)
        if not torch.cuda.is_available():
            return TorchCheck(
                False, f"torch {version} (CUDA {torch.version.cuda}) sees no GPU; the installer set it up for {want}.",
                "check that the NVIDIA driver works (`nvidia-smi` should list the GPU; reboot after a driver "
                f"update). If you changed the GPU or the driver, {REINSTALL}. Training on the CPU works but is slow.",
                build)
        info = gpu_info()
        if info.compute_capability and not _has_kernels(torch.cuda.get_arch_list(), info.compute_capability):
            return TorchCheck(
                False, f"torch {version} has no kernels for {info.name} ({_sm(info.compute_capability)}).",
                f"{REINSTALL}; if that does not help, update the NVIDIA driver first.", build)
        return TorchCheck(True, f"torch {version} sees {info.name} ({info.total_memory / 2**30:.1f} GiB, "
                                f"{_sm(info.compute_capability)}), as the installer chose ({build}).", "", build)
    if device == "mps":
        info = gpu_info()
        if info is None or info.backend != "mps":
            return TorchCheck(False, f"torch {version} cannot use the Apple GPU (MPS); it will run on the CPU.",
                              "update macOS to 14 or newer; on an Intel Mac LoRA Studio runs on the CPU only.", build)
        return TorchCheck(True, f"torch {version} uses the Apple GPU (MPS).", "", build)
    info = gpu_info()
    where = f"{info.name}" if info else "the CPU"
    if device == "cpu":
        warnings = record.get("warnings") or []
        if info is None and warnings:
            return TorchCheck(True, f"torch {version} runs on the CPU: {warnings[0]}", "", build)
        return TorchCheck(True, f"torch {version} runs on {where}, as the installer chose (cpu).", "", build)
    return TorchCheck(True, f"torch {version} runs on {where} (not installed by the LoRA Studio installer).")
