import subprocess
import sys

import pytest

from lora_studio.cli import COMMANDS


def _run(*args):
    return subprocess.run([sys.executable, "-m", "lora_studio", *args], capture_output=True, text=True)


def test_top_level_help_lists_all():
    out = _run("--help")
    assert out.returncode == 0
    for name, _ in COMMANDS:
        assert name in out.stdout


@pytest.mark.parametrize("name", [n for n, _ in COMMANDS])
def test_each_subcommand_help(name):
    out = _run(name, "--help")
    assert out.returncode == 0, out.stderr
    assert "usage: lora-studio" in out.stdout


def test_dataset_check_help():
    out = _run("dataset", "check", "--help")
    assert out.returncode == 0 and "DIR" in out.stdout
