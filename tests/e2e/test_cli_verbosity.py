"""Library noise is off by default and `--verbose` (anywhere on the command line) turns it back on; run
folders are absolute."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from lora_studio import verbosity
from lora_studio.cli import build_parser


@pytest.mark.parametrize("argv", [["--verbose", "train", "c.toml"], ["train", "c.toml", "-v"],
                                  ["dataset", "check", "d", "--verbose"], ["dataset", "--verbose", "check", "d"]])
def test_verbose_is_accepted_before_and_after_any_command(argv):
    args = build_parser().parse_args(argv)
    assert args.verbose_all or args.verbose


def _shown(module: str, category) -> bool:
    with warnings.catch_warnings(record=True) as seen:
        warnings.warn_explicit("msg", category, "x.py", 1, module=module)
    return bool(seen)


def test_quiet_by_default(monkeypatch):
    env: dict[str, str] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        verbosity.apply(False, env)
        assert not _shown("diffusers.utils.deprecation_utils", FutureWarning)
        assert not _shown("torch.nn.modules.module", UserWarning)
        assert _shown("lora_studio.core.models.loader", UserWarning)  # the app's own still show
    assert env["TQDM_DISABLE"] == "1" and env["TRANSFORMERS_VERBOSITY"] == "error"
    assert env["DIFFUSERS_VERBOSITY"] == "error" and "LORA_STUDIO_VERBOSE" not in env


def test_verbose_leaves_the_libraries_alone_and_reaches_child_processes():
    env: dict[str, str] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        verbosity.apply(True, env)
        assert _shown("diffusers.utils.deprecation_utils", FutureWarning)
    assert env == {"LORA_STUDIO_VERBOSE": "1"}
    child = dict(env)
    verbosity.apply(False, child)  # `accelerate launch` re-runs the CLI without the flag
    assert child == env


def test_a_users_own_library_settings_win():
    env = {"TRANSFORMERS_VERBOSITY": "info"}
    with warnings.catch_warnings():
        verbosity.apply(False, env)
    assert env["TRANSFORMERS_VERBOSITY"] == "info"


def test_output_dir_is_absolute_by_default_and_relative_to_the_config_file(tmp_path, monkeypatch):
    from lora_studio.config import TrainingConfig, load

    default = Path(TrainingConfig().output_dir)
    assert default.is_absolute() and default.parts[-3:] == ("LoRA Studio", "runs", "lora-output")
    (tmp_path / "cfgs").mkdir()
    (tmp_path / "cfgs" / "run.toml").write_text('output_dir = "runs/mine"\n', encoding="utf-8")
    monkeypatch.chdir(tmp_path)  # not where the config is
    assert load("cfgs/run.toml").output_dir == str(tmp_path / "cfgs" / "runs" / "mine")
