import pytest

from lora_studio import config as c


def test_defaults_validate_and_round_trip(tmp_path):
    cfg = c.TrainingConfig()
    cfg.validate()
    path = tmp_path / "run.toml"
    c.save(cfg, path)
    assert c.load(path) == cfg
    assert f"schema_version = {c.SCHEMA_VERSION}" in path.read_text()


def test_alpha_defaults_to_rank():
    assert c.TrainingConfig(rank=8).alpha == 8.0
    assert c.TrainingConfig(rank=8, lora_alpha=4.0).alpha == 4.0


@pytest.mark.parametrize(
    "data,key,words",
    [
        ({"rnak": 4}, "rnak", "did you mean 'rank'"),
        ({"rank": 0}, "rank", "out of range"),
        ({"learning_rate": "fast"}, "learning_rate", "must be a number"),
        ({"mixed_precision": "fp8"}, "mixed_precision", "is not one of"),
        ({"compile_unet": "everything"}, "compile_unet", "is not one of"),
        ({"gradient_checkpointing": 1}, "gradient_checkpointing", "true or false"),
        ({"mode": "dreambooth"}, "instance_prompt", "rare token"),
        ({"mode": "dreambooth", "instance_prompt": "a sks dog", "with_prior_preservation": True},
         "class_prompt", "class prompt"),
        ({"schema_version": 99}, "schema_version", "update LoRA Studio"),
        ({"target_modules": []}, "target_modules", "non-empty"),
    ],
)
def test_errors_name_the_key(data, key, words):
    with pytest.raises(c.ConfigError) as info:
        c.from_dict(data)
    assert info.value.key == key
    assert key in str(info.value)
    assert words in str(info.value)


def test_bad_toml_file_names_the_file(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("rank = = 3")
    with pytest.raises(c.ConfigError, match="bad.toml"):
        c.load(path)
    path.write_bytes(b"rank = 3\ninstance_prompt = '\xff'")
    with pytest.raises(c.ConfigError, match="UTF-8"):
        c.load(path)


def test_int_is_accepted_for_float_fields():
    assert c.from_dict({"learning_rate": 1}).learning_rate == 1.0


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
@pytest.mark.parametrize("gib", c.PRESET_SIZES)
def test_presets_are_valid(family, gib):
    cfg = c.apply_preset(c.TrainingConfig(), family, gib)
    if gib <= 8:
        assert cfg.gradient_checkpointing and cfg.cache_latents


def test_preset_for_memory():
    assert c.preset_for_memory(3.0) == 4
    assert c.preset_for_memory(5.8) == 6  # a 6 GB card: SDXL with the 8-bit base
    assert c.apply_preset(c.TrainingConfig(), "sdxl", 6).int8_base
    assert c.preset_for_memory(7.8) == 8
    assert c.preset_for_memory(11.9) == 12
    assert c.preset_for_memory(80) == 24


def test_every_field_has_help():
    for name, f in c.FIELDS.items():
        assert f.metadata["help"], name


def test_a_version_1_file_loses_its_dead_settings(tmp_path):
    # dataloader_num_workers was shown and read by nothing; compile_unet "auto" meant "off".
    path = tmp_path / "old.toml"
    path.write_text('schema_version = 1\ndataloader_num_workers = 4\ncompile_unet = "auto"\n')
    cfg = c.load(path)
    assert cfg.compile_unet == "off" and cfg.schema_version == c.SCHEMA_VERSION
    assert "dataloader_num_workers" not in c.FIELDS
    with pytest.raises(c.ConfigError, match="dataloader_num_workers"):
        c.from_dict({"schema_version": 2, "dataloader_num_workers": 4})
    with pytest.raises(c.ConfigError, match="compile_unet"):
        c.from_dict({"compile_unet": "auto"})
