"""A training run's main file `<run>/<run>.safetensors`: loads like the folder, kohya keys with alpha, the metadata
of what was trained; a LoHa run's LyCORIS-layout file is read as LoHa and applied by the preview."""

import json
from pathlib import Path

import pytest
import torch
from lora_testkit import diff, pipeline, render
from safetensors import safe_open

from lora_studio.cli import main
from lora_studio.config import TrainingConfig
from lora_studio.core.inference.engine import PreviewEngine, PreviewRequest
from lora_studio.core.inference.merge import fuse_into
from lora_studio.core.lora_files import inspect_file, lora_trigger_phrase, read_lora
from lora_studio.core.training import train

SUBJECT = Path(__file__).resolve().parents[2] / "resources" / "datasets" / "demo-subject"
PROMPT = "a photo of sks shape"
REQ = PreviewRequest(PROMPT, steps=2, guidance=5.0, seed=3, width=64, height=64)


def _run(out: Path, **changes):
    cfg = TrainingConfig(pretrained_model_name_or_path="demo", train_data_dir=str(SUBJECT), mode="dreambooth",
                         instance_prompt=PROMPT, output_dir=str(out), resolution=64, max_train_steps=3,
                         checkpointing_steps=100, rank=4, lora_alpha=12.0, learning_rate=5e-2,
                         train_text_encoder=True, text_encoder_lr=5e-2, report_to="none", sample_steps=1, seed=7)
    for key, value in changes.items():
        setattr(cfg, key, value)
    return train(cfg)


@pytest.fixture(scope="module")
def locon_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "subject"
    return out, _run(out, network="locon")


def _keys_and_meta(path):
    with safe_open(str(path), framework="pt") as fh:
        return {k: fh.get_tensor(k) for k in fh.keys()}, fh.metadata()


def test_main_file_draws_like_the_folder_at_alpha(locon_run):
    out, result = locon_run
    main_file = out / "subject.safetensors"
    assert result["lora_path"] == str(main_file) and next(iter(result)) == "lora_path"
    tensors, _ = _keys_and_meta(main_file)
    layers = {k.rsplit(".", 2)[0] for k in tensors if k.endswith(".lora_down.weight")}
    assert all(k.startswith(("lora_unet_", "lora_te_")) for k in tensors)
    assert {k for k in tensors if k.endswith(".alpha")} == {f"{layer}.alpha" for layer in layers}
    assert {float(tensors[f"{layer}.alpha"]) for layer in layers} == {12.0}  # alpha, not the rank
    assert any(layer.endswith("_resnets_0_conv1") for layer in layers)  # locon: the ResNet convolutions
    assert any(layer.startswith("lora_te_") for layer in layers)

    base = render(pipeline("demo"), prompt=PROMPT)
    folder = pipeline("demo")
    folder.load_lora_weights(str(out))  # pytorch_lora_weights.safetensors: alpha from its peft metadata
    top = pipeline("demo")
    top.load_lora_weights(str(main_file))  # diffusers' kohya reader
    from_folder, from_top = render(folder, prompt=PROMPT), render(top, prompt=PROMPT)
    assert diff(from_folder, base) > 1 / 255
    assert diff(from_top, from_folder) < 1 / 255

    # the strength is alpha / rank = 3: the change fused at that scale matches, at alpha = rank it does not
    fused, weak = pipeline("demo"), pipeline("demo")
    fuse_into(fused, [(main_file, 1.0)])
    fuse_into(weak, [(main_file, 4 / 12)])
    assert diff(render(fused, prompt=PROMPT), from_top) < 1 / 255
    assert diff(render(weak, prompt=PROMPT), from_top) > 1 / 255


def test_dreambooth_run_metadata(locon_run, capsys):
    out, result = locon_run
    main_file = Path(result["lora_path"])
    pictures = sorted(SUBJECT.glob("*.png"))
    captions = {p.with_suffix(".txt").read_text(encoding="utf-8").strip() for p in pictures}
    assert captions == {PROMPT}  # the demo subject's captions are the instance prompt
    _, meta = _keys_and_meta(main_file)
    assert json.loads(meta["ss_tag_frequency"]) == {SUBJECT.name: {w: len(pictures) for w in PROMPT.split()}}
    assert "sks" in meta["modelspec.trigger_phrase"]
    assert meta["ss_num_train_images"] == str(len(pictures))
    assert meta["modelspec.resolution"] == "64x64" and meta["ss_resolution"] == "(64, 64)"
    assert (meta["ss_steps"], meta["ss_seed"], meta["ss_sd_model_name"]) == ("3", "7", "demo")
    assert float(meta["ss_training_started_at"]) <= float(meta["ss_training_finished_at"])
    # hashed in a background thread during training: the file's real sha256 all the same
    import hashlib

    from lora_studio.core.demo import demo_model_path

    unet_file = sorted((demo_model_path("demo") / "unet").glob("*.safetensors"))[0]
    assert meta["ss_new_sd_model_hash"] == hashlib.sha256(unet_file.read_bytes()).hexdigest()
    assert meta["ss_base_model_version"] == "sd_v1" and meta["ss_network_alpha"] == "12"

    assert "sks" in lora_trigger_phrase(main_file)  # what the Preview tab offers
    info = inspect_file(main_file)
    assert (info["format"], info["network"], info["ranks"], info["alphas"]) == ("kohya", "LoRA", [4], [12.0])
    assert main(["inspect", str(main_file)]) == 0
    printed = capsys.readouterr().out
    assert f"trigger phrase: {PROMPT}" in printed and "training images: 10" in printed
    assert "trained at: 64x64" in printed and "sks (10)" in printed


def _peft_merged_reference(adapter_file: Path, network: str, rank: int, alpha: float, targets):
    """The demo pipeline with the run's LoHa / LoKr change added to its weights by peft's own layers."""
    from peft import LoHaConfig, LoKrConfig, inject_adapter_in_model, set_peft_model_state_dict
    from peft.tuners.tuners_utils import BaseTunerLayer
    from safetensors.torch import load_file

    state = load_file(str(adapter_file))
    holder, ref = pipeline("demo"), pipeline("demo")
    for comp, tgt in (("unet", targets), ("text_encoder", ["q_proj", "k_proj", "v_proj", "out_proj"])):
        model = getattr(holder, comp)
        kind = LoHaConfig if network == "loha" else LoKrConfig
        inject_adapter_in_model(kind(r=rank, alpha=alpha, target_modules=tgt), model, adapter_name="default")
        part = {k[len(comp) + 1:]: v for k, v in state.items() if k.startswith(comp + ".")}
        assert part and not set_peft_model_state_dict(model, part).unexpected_keys
        ref_modules = dict(getattr(ref, comp).named_modules())
        with torch.no_grad():
            for name, layer in model.named_modules():
                if isinstance(layer, BaseTunerLayer):
                    w = ref_modules[name].weight
                    w += layer.get_delta_weight("default").reshape(w.shape)
    return ref


# network -> (inspect's name, parts every file has, parts it may have, a part each conv1 layer has)
LYCORIS = {"loha": ("LoHa", {"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "alpha"}, set(), "hada_w1_b"),
           "lokr": ("LoKr", {"lokr_w1", "alpha"}, {"lokr_w2", "lokr_w2_a", "lokr_w2_b"}, "lokr_w1")}


@pytest.mark.parametrize("network", ["loha", "lokr"])
def test_lycoris_run_writes_its_layout_read_and_applied(tmp_path, network):
    label, required, optional, conv_part = LYCORIS[network]
    targets = ["to_q", "to_k", "to_v", "to_out.0", "conv1"]
    out = tmp_path / network
    result = _run(out, network=network, target_modules=targets)
    main_file = out / f"{network}.safetensors"
    assert result["lora_path"] == str(main_file)
    tensors, meta = _keys_and_meta(main_file)
    parts = {k.rsplit(".", 1)[1] for k in tensors}
    assert required <= parts <= required | optional, parts
    assert all(k.startswith(("lora_unet_", "lora_te_")) for k in tensors)
    assert any(f"_resnets_0_conv1.{conv_part}" in k for k in tensors)
    assert meta["ss_network_module"] == "lycoris.kohya" and json.loads(meta["ss_network_args"]) == {"algo": network}
    info = inspect_file(main_file)
    assert (info["format"], info["network"]) == ("lycoris", label)
    if network == "loha":
        assert (info["ranks"], info["alphas"]) == ([4], [12.0])
        assert {float(v) for k, v in tensors.items() if k.endswith(".alpha")} == {12.0}
    assert read_lora(main_file).network == network

    engine = PreviewEngine(pipe=pipeline("demo"))
    base = engine.generate(REQ)
    engine.set_loras([(main_file, network)])
    applied = engine.generate(REQ)
    reference = PreviewEngine(pipe=_peft_merged_reference(out / "pytorch_lora_weights.safetensors", network, 4,
                                                          12.0, targets)).generate(REQ)
    assert diff(applied, base) > 1  # 0..255 images: the adapter visibly changes the picture
    assert diff(applied, reference) < 1  # < 1/255 of the range
