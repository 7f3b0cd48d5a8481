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


def _entry(tmp_path, *args):
    """``lora-studio ARGS`` through the console script's function, with an exit handler that says if it ran."""
    code = ("import atexit, sys; atexit.register(lambda: print('TEARDOWN', flush=True)); "
            f"sys.argv = ['lora-studio', *{list(args)!r}]; from lora_studio.cli import entry; entry()")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)


def test_commands_end_without_the_interpreter_teardown_and_keep_their_output_and_exit_code(tmp_path):
    """A headless command ends the process at once (the teardown of torch and diffusers cost ~1.8 s a run), after
    its output is flushed; the exit code is the command's."""
    import torch
    from safetensors.torch import save_file

    lora = tmp_path / "x.safetensors"
    save_file({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 8),
               "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.zeros(8, 4)}, str(lora))
    ok = _entry(tmp_path, "inspect", str(lora))
    assert ok.returncode == 0, ok.stderr
    assert "TEARDOWN" not in ok.stdout and "rank" in ok.stdout.lower()
    bad = _entry(tmp_path, "inspect", str(tmp_path / "missing.safetensors"))
    assert bad.returncode == 1 and "error:" in bad.stderr and "TEARDOWN" not in bad.stdout
    helped = _entry(tmp_path, "gui", "--help")  # argparse ends it: the normal way out
    assert helped.returncode == 0 and "TEARDOWN" in helped.stdout
