"""Training configuration: strict YAML merge, dotted key=value overrides, validation and resume comparisons."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from crossview.config import (
    DEFAULT_CONFIG,
    config_differences,
    default_config,
    dump_yaml,
    flatten_config,
    merge_config,
    parse_override,
    resolve_config,
)
from crossview.errors import ConfigError


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_resolve_and_are_a_plain_copy():
    config = resolve_config()
    assert config == DEFAULT_CONFIG
    config["optim"]["lr"] = 1.0
    assert DEFAULT_CONFIG["optim"]["lr"] != 1.0  # the defaults are never mutated
    assert yaml.safe_load(dump_yaml(config)) == config  # plain types only: a YAML round trip is lossless


def test_every_default_key_has_a_comment():
    """LightGlue-style defaults: each key of DEFAULT_CONFIG is documented on its line in the source."""
    source = Path(__file__).resolve().parents[1].joinpath("crossview", "config.py").read_text(encoding="utf-8")
    block = source[source.index("DEFAULT_CONFIG: dict") : source.index("OPEN_SECTIONS")]
    for dotted in flatten_config(DEFAULT_CONFIG):
        key = dotted.rsplit(".", 1)[-1]
        lines = [line for line in block.splitlines() if re.search(rf'"{re.escape(key)}":', line)]
        assert lines and all("#" in line for line in lines), f"{dotted} has no comment"


def test_yaml_file_is_merged_then_overrides_win(tmp_path):
    conf = _write(tmp_path / "conf.yaml", "optim:\n  lr: 3.0e-4\n  accumulate: 2\ntrain:\n  epochs: 4\n")
    config = resolve_config(conf, ["train.epochs=7"])
    assert config["optim"]["lr"] == pytest.approx(3e-4)
    assert config["optim"]["accumulate"] == 2
    assert config["train"]["epochs"] == 7  # the override came last
    assert config["optim"]["weight_decay"] == DEFAULT_CONFIG["optim"]["weight_decay"]  # untouched keys stay


def test_unknown_key_in_yaml_names_the_key_and_the_file(tmp_path):
    conf = _write(tmp_path / "bad.yaml", "optim:\n  lrr: 0.1\n")
    with pytest.raises(ConfigError) as info:
        resolve_config(conf)
    assert "'optim.lrr'" in str(info.value) and "bad.yaml" in str(info.value)
    assert "lr" in str(info.value)  # the known keys are listed


def test_unknown_top_level_key_and_unknown_override_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="'trian'"):
        resolve_config(_write(tmp_path / "c.yaml", "trian:\n  epochs: 3\n"))
    with pytest.raises(ConfigError, match=r"override 'data\.citys=\[A\]': unknown configuration key 'data\.citys'"):
        resolve_config(None, ["data.citys=[A]"])


def test_overrides_parse_yaml_values_including_exponent_floats():
    assert parse_override("optim.lr=3e-4") == (["optim", "lr"], 3e-4)  # YAML 1.1 would keep '3e-4' a string
    assert parse_override("optim.lr=1E+2")[1] == 100.0
    assert parse_override("data.cities=[NewYork, Seattle]") == (["data", "cities"], ["NewYork", "Seattle"])
    assert parse_override("data.cities=null")[1] is None
    assert parse_override("data.random_roll=true")[1] is True
    assert parse_override("model.backbone=resnet34") == (["model", "backbone"], "resnet34")
    assert parse_override("loss.type=") == (["loss", "type"], None)


def test_override_values_are_never_evaluated():
    _, value = parse_override("model.backbone=__import__('os').system('false')")
    assert value == "__import__('os').system('false')"  # a plain string
    with pytest.raises(ConfigError):
        parse_override("model.x=!!python/object/apply:os.system ['false']")  # the safe loader refuses tags


@pytest.mark.parametrize("text", ["optim.lr", "=3", ".lr=3", "optim..lr=3", "optim.lr=[unclosed"])
def test_malformed_overrides_are_refused(text):
    with pytest.raises(ConfigError, match="bad override"):
        parse_override(text)


def test_model_section_is_open_for_the_encoder_keys():
    config = resolve_config(None, ["model.backbone=resnet34", "model.pano_width=256"])
    assert config["model"] == {"name": DEFAULT_CONFIG["model"]["name"], "backbone": "resnet34", "pano_width": 256}


def test_a_section_cannot_be_replaced_by_a_value():
    with pytest.raises(ConfigError, match="'optim' is a section"):
        resolve_config(None, ["optim=3"])


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("train.batch_size=1", "train.batch_size"),
        ("optim.lr=-1", "optim.lr"),
        ("optim.lr=fast", "optim.lr"),
        ("optim.betas=[0.9]", "optim.betas"),
        ("optim.accumulate=0", "optim.accumulate"),
        ("loss.type=hinge", "loss.type"),
        ("data.split=both", "data.split"),
        ("data.cities=[]", "data.cities"),
        ("sampler.mode=nearby", "sampler.mode"),
        ("train.amp=yes please", "train.amp"),
        ("seed=-1", "seed"),
        ("train.epochs=true", "train.epochs"),
        ("train.init_partial=3", "train.init_partial"),
        ("loss.dense_weight=-0.5", "loss.dense_weight"),
    ],
)
def test_invalid_values_name_the_key(override, key):
    with pytest.raises(ConfigError, match=re.escape(key)):
        resolve_config(None, [override])


def test_yaml_file_errors_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        resolve_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        resolve_config(_write(tmp_path / "broken.yaml", "optim: [1, 2\n"))
    with pytest.raises(ConfigError, match="expected a mapping"):
        resolve_config(_write(tmp_path / "list.yaml", "- 1\n- 2\n"))
    assert resolve_config(_write(tmp_path / "empty.yaml", "")) == DEFAULT_CONFIG


def test_config_differences_lists_changed_keys_but_not_runtime_ones():
    old = default_config()
    new = merge_config(
        old, {"optim": {"lr": 1.0}, "data": {"num_workers": 8}, "model": {"descriptor_dim": 64}}, source="t"
    )
    assert config_differences(old, new) == ["model.descriptor_dim", "optim.lr"]  # num_workers: results unchanged
    assert config_differences(old, new, ignore=()) == ["data.num_workers", "model.descriptor_dim", "optim.lr"]
    assert config_differences(old, default_config()) == []


def test_flatten_config_uses_dotted_keys_and_keeps_lists():
    assert flatten_config({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": None}) == {"a.b": 1, "a.c.d": [1, 2], "e": None}
