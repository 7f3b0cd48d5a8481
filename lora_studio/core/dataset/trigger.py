"""The trigger-word guard: how many training captions lack the run's trigger word.

A forgotten trigger word is the most common wasted run: the LoRA learns the look but nothing in the
prompt calls it up. The guard counts before training; the Training tab offers to add the word, the
CLI warns, and the word goes into the validation prompt so the samples show what the LoRA learned.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field


def token_pattern(token: str) -> re.Pattern:
    """The token as a whole word (``sks`` is not found in ``sksx``); case-sensitive like the captions' use."""
    return re.compile(r"(?<!\w)" + re.escape(token.strip()) + r"(?!\w)")


def has_token(text: str, token: str) -> bool:
    return bool(token_pattern(token).search(text))


def add_token(text: str, token: str, where: str = "prepend", separator: str = ", ") -> str:
    """``text`` with ``token`` put at its start or end; unchanged when it holds the token already.

    Surrounding whitespace (a sidecar's final newline) is kept where it was.
    """
    token = token.strip()
    if not token or has_token(text, token):
        return text
    body = text.strip()
    if not body:
        return token
    lead = text[: len(text) - len(text.lstrip())]
    trail = text[len(text.rstrip()):]
    joined = f"{token}{separator}{body}" if where == "prepend" else f"{body}{separator}{token}"
    return lead + joined + trail


@dataclass
class TriggerCheck:
    token: str
    total: int
    missing: list[str] = field(default_factory=list)  # names of the images whose caption lacks the token

    @property
    def count(self) -> int:
        return len(self.missing)

    def message(self) -> str:
        names = ", ".join(self.missing[:5]) + (" ..." if len(self.missing) > 5 else "")
        return (f"{self.count} of {self.total} captions lack the trigger word '{self.token}' ({names}); "
                f"the LoRA will answer to it only weakly. Add it in the Dataset tab (Trigger token: Prepend) or "
                f"with `lora-studio caption DIR --model demo --mode append --trigger {self.token}`.")


def check_captions(captions, token: str) -> TriggerCheck:
    """``captions``: (name, text) pairs as training will read them."""
    pattern = token_pattern(token)
    pairs = list(captions)
    missing = [name for name, text in pairs if not pattern.search(text)]
    return TriggerCheck(token.strip(), len(pairs), missing)


def run_trigger(config) -> str:
    """The word a run's prompts must hold: ``trigger_word``, or for DreamBooth the instance prompt's own token."""
    word = getattr(config, "trigger_word", "").strip()
    if word or config.mode != "dreambooth" or not config.class_prompt.strip():
        return word
    own = [w for w in config.instance_prompt.split() if w.lower() not in set(config.class_prompt.lower().split())]
    return own[0] if own else ""


def check_config(config, dataset=None) -> TriggerCheck | None:
    """The guard for a run: None when nothing is to check (no trigger, or DreamBooth: the instance prompt
    is every image's prompt). Captions are read as training reads them (``caption_prefix`` included)."""
    token = run_trigger(config)
    if not token or config.mode != "style" or not config.train_data_dir.strip():
        return None
    from lora_studio.core.dataset import Dataset

    ds = dataset if dataset is not None else Dataset.open(config.train_data_dir)
    return check_captions(((item.name, config.caption_prefix + item.prompt) for item in ds), token)


def validation_prompt(config) -> str:
    """The run's validation prompt, with the trigger put in when it is missing."""
    token = run_trigger(config)
    prompt = config.validation_prompt
    if not token or not prompt.strip():
        return prompt
    return add_token(prompt, token)
