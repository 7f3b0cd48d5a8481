"""What the libraries may print: by default only what a user can act on; `--verbose` shows everything.

Set through environment variables where the libraries read them, so it costs no heavy import (``--help``
stays instant) and reaches child processes (``accelerate launch`` re-runs the CLI with the same settings).
"""

from __future__ import annotations

import os
import warnings

VERBOSE_ENV = "LORA_STUDIO_VERBOSE"

# Read by transformers, diffusers and huggingface_hub when they are imported. TQDM_DISABLE turns off every
# tqdm bar whose caller does not ask for one: the libraries' loading and sampling bars, which nest inside the
# app's own bars and leave "\x1b[A" cursor moves in a log file. The app's bars pass disable=False.
QUIET_ENV = {
    "TRANSFORMERS_VERBOSITY": "error",
    "DIFFUSERS_VERBOSITY": "error",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "DIFFUSERS_NO_ADVISORY_WARNINGS": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TQDM_DISABLE": "1",
}


def is_verbose(environ=os.environ) -> bool:
    return environ.get(VERBOSE_ENV, "") not in ("", "0")


def apply(verbose: bool = False, environ=os.environ) -> None:
    """Quiet the libraries unless ``verbose`` (or an inherited LORA_STUDIO_VERBOSE=1); a user's own setting of
    any of these variables wins."""
    if verbose:
        environ[VERBOSE_ENV] = "1"
    if is_verbose(environ):
        return
    for key, value in QUIET_ENV.items():
        environ.setdefault(key, value)
    # Deprecation notices and library advice (torch, diffusers, transformers, peft, accelerate) are for the
    # people who write the code, not for someone training a LoRA. The app's own warnings are events, and a
    # UserWarning raised from lora_studio's own modules still shows.
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"(?!lora_studio)")
