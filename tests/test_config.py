"""Run configuration: defaults < YAML < flags, with the embedded model's scaled healing defaults."""

import pytest

from interlace.config import read_yaml, resolve_config
from interlace.pipeline import EMBEDDED_HEAL, ConfigError


def test_flags_override_yaml_which_overrides_defaults(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("ratio: 0.3\nmethod: shortgpt\nheal:\n  lr: 0.002\n  method: lora\n  lora_rank: 4\n")
    config = resolve_config(read_yaml(path), {"ratio": 0.2, "method_heal": "full"})
    assert config.ratio == 0.2 and config.method == "shortgpt"
    assert config.heal.lr == 0.002 and config.heal.method == "full" and config.heal.lora_rank == 4
    assert config.heal.batch_size == EMBEDDED_HEAL["batch_size"]


def test_hub_models_get_the_papers_healing_defaults():
    config = resolve_config({}, {"model": "Qwen/Qwen3-VL-8B-Instruct", "seed": 3})
    assert config.heal.lr == 1e-5 and config.heal.batch_size == 32 and config.heal.seed == 3


def test_bad_values_are_config_errors():
    with pytest.raises(ConfigError, match="healing options"):
        resolve_config({"heal": {"lr": -1}}, {})
    with pytest.raises(ConfigError, match="does not exist"):
        read_yaml("/no/such/file.yaml")
