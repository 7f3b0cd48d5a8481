"""Merge (concatenation exact, SVD with reported error) and fuse into a base saved as one file or a folder."""

import numpy as np
import pytest
from lora_testkit import diff, make_lora, pipeline

from lora_studio.core.inference.engine import PreviewEngine, PreviewRequest
from lora_studio.core.inference.merge import fuse_and_save, merge, save_merged
from lora_studio.core.lora_files import read_lora
from lora_studio.core.models.loader import resolve_model
from lora_studio.errors import LoraStudioError

REQ = PreviewRequest("a green star in the centre", steps=2, guidance=5.0, seed=5)


def arr(image):
    return np.asarray(image, np.float64) / 255


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("merge")
    return {"a": make_lora("demo", d / "a.safetensors", seed=11, rank=4, alpha=8.0),
            "b": make_lora("demo", d / "b.safetensors", seed=12, rank=2, alpha=1.0),
            "xl": make_lora("demo-xl", d / "xl.safetensors", seed=13)}


def _live(files, weights):
    engine = PreviewEngine(pipe=pipeline("demo"), mode="live")
    engine.set_loras([(files[n], n) for n in weights])
    engine.set_weights(weights)
    return arr(engine.generate(REQ))


def test_concatenation_merge_equals_live_blend(files, tmp_path):
    live = PreviewEngine(pipe=pipeline("demo"), mode="live")
    live.set_loras([(files["a"], "a"), (files["b"], "b")])
    merged_engine = PreviewEngine(pipe=pipeline("demo"), mode="live")
    base = arr(merged_engine.generate(REQ))
    for i, weights in enumerate(({"a": 1.0, "b": 1.0}, {"a": 0.8, "b": -0.6})):
        result = merge([(files[n], w) for n, w in weights.items()])
        assert result.relative_error == 0.0 and result.rank == 0
        out = save_merged(result, tmp_path / f"merged{i}.safetensors")
        merged = read_lora(out)
        assert merged.ranks == [6] and merged.family == "sd1"
        merged_engine.set_loras([(out, "m")])
        got = arr(merged_engine.generate(REQ))
        live.set_weights(weights)
        expected = arr(live.generate(REQ))
        assert diff(got, expected) < 1 / 255, weights
        assert diff(expected, base) > 0.01


def test_svd_merge_reports_error_shrinking_with_rank(files, tmp_path):
    items = [(read_lora(files["a"]), 0.8), (read_lora(files["b"]), -0.6)]
    errors = [merge(items, rank=r).relative_error for r in (1, 2, 4, 6)]
    assert errors[0] > errors[1] > errors[2] > 0.0
    assert errors[3] < 1e-6  # rank 6 holds the whole (rank <= 6) sum
    result = merge(items, rank=2)
    assert read_lora(save_merged(result, tmp_path / "svd.safetensors")).ranks == [2]
    kohya = read_lora(save_merged(result, tmp_path / "svd-kohya.safetensors", fmt="kohya"))
    assert kohya.format == "kohya" and kohya.ranks == [2]


def test_merge_refuses_mixed_families(files):
    with pytest.raises(LoraStudioError) as err:
        merge([(files["a"], 1.0), (files["xl"], 1.0)])
    assert "SD 1.x" in str(err.value) and "SDXL" in str(err.value)


def test_fuse_into_single_file_loads_and_matches_live_lora(files, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    base = pipeline("demo")
    out = fuse_and_save(base, [(files["a"], 0.9)], tmp_path / "fused.safetensors")
    assert resolve_model(out).kind == "single_file"
    fused = PreviewEngine(str(out), device="cpu")
    assert fused.base_loads == 1
    got = arr(fused.generate(REQ))
    assert diff(got, _live(files, {"a": 0.9})) < 1 / 255

    folder = fuse_and_save(pipeline("demo"), [(files["a"], 0.9)], tmp_path / "fused-folder")
    assert resolve_model(folder).kind == "diffusers"
    assert diff(arr(PreviewEngine(str(folder), device="cpu").generate(REQ)), got) < 1 / 255
