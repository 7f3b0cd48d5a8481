"""The preview side from the command line: generate, convert, inspect, merge, fuse; errors without tracebacks."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lora_studio.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core"))
from lora_testkit import make_lora  # noqa: E402


@pytest.fixture(scope="module")
def loras(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    return {"a": make_lora("demo", d / "a.safetensors", seed=21), "b": make_lora("demo", d / "b.safetensors", seed=22),
            "xl": make_lora("demo-xl", d / "xl.safetensors", seed=23)}


def test_generate_convert_inspect_merge_fuse(loras, tmp_path, capsys):
    png = tmp_path / "one.png"
    assert main(["generate", "--model", "demo", "--prompt", "a red circle", "--lora", f"{loras['a']}:0.8",
                 "--steps", "2", "--scheduler", "DPM++ 2M Karras", "--out", str(png)]) == 0
    assert Image.open(png).size == (64, 64)
    low = tmp_path / "low.png"  # the low-memory path gives the same picture (on the CPU nothing moves)
    assert main(["generate", "--model", "demo", "--prompt", "a red circle", "--lora", f"{loras['a']}:0.8",
                 "--steps", "2", "--scheduler", "DPM++ 2M Karras", "--low-memory", "--out", str(low)]) == 0
    assert np.array_equal(np.asarray(Image.open(low)), np.asarray(Image.open(png)))

    kohya = tmp_path / "a-kohya.safetensors"
    assert main(["convert", str(loras["a"]), "--to", "kohya", "--out", str(kohya)]) == 0
    capsys.readouterr()
    assert main(["inspect", str(kohya), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["format"], info["family"], info["ranks"], info["alphas"]) == ("kohya", "sd1", [4], [8.0])
    assert info["metadata"]["ss_base_model_version"] == "sd_v1"

    merged = tmp_path / "merged.safetensors"
    assert main(["merge", "--lora", f"{loras['a']}:1", "--lora", f"{kohya}:-0.5", "--rank", "3",
                 "--out", str(merged)]) == 0
    assert "SVD relative error" in capsys.readouterr().out

    fused = tmp_path / "fused.safetensors"
    assert main(["merge", "--lora", f"{loras['a']}:0.7", "--model", "demo", "--fuse-out", str(fused)]) == 0
    grid = tmp_path / "grid.png"
    assert main(["generate", "--model", str(fused), "--prompt", "a red circle", "--lora", str(merged),
                 "--grid-weights", "0,1", "--grid-seeds", "1,2", "--steps", "1", "--out", str(grid)]) == 0
    assert Image.open(grid).width > 2 * 64


def test_generate_with_an_8_bit_unet(loras, tmp_path, capsys):
    """--int8: the LoRA loads onto the 8-bit UNet and the picture is the full-precision one up to rounding; a
    LoRA of the other family is still refused by name (the file check reads the 8-bit layers' shapes)."""
    pictures = {}
    for flag in ("--no-int8", "--int8"):
        out = tmp_path / f"{flag}.png"
        assert main(["generate", "--model", "demo-xl", "--prompt", "a red circle", "--lora", f"{loras['xl']}:0.8",
                     "--steps", "2", flag, "--out", str(out)]) == 0
        pictures[flag] = np.asarray(Image.open(out), np.float64) / 255
    assert 0 < np.abs(pictures["--int8"] - pictures["--no-int8"]).mean() < 2 / 255
    rc = main(["generate", "--model", "demo-xl", "--prompt", "x", "--lora", str(loras["a"]), "--steps", "1", "--int8",
               "--out", str(tmp_path / "x.png")])
    err = capsys.readouterr().err
    assert rc == 1 and "SDXL" in err and "SD 1.x" in err and "Traceback" not in err


@pytest.mark.parametrize("model,lora", [("demo-xl", "a"), ("demo", "xl")])
def test_wrong_family_fails_cleanly(loras, tmp_path, capsys, model, lora):
    rc = main(["generate", "--model", model, "--prompt", "x", "--lora", str(loras[lora]), "--steps", "1",
               "--out", str(tmp_path / "x.png")])
    err = capsys.readouterr().err
    assert rc == 1
    assert "SDXL" in err and "SD 1.x" in err and "Traceback" not in err and "size mismatch" not in err
    assert not (tmp_path / "x.png").exists()
