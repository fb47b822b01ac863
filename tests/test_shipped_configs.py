"""Every shipped config parses: a shipped config is a tested artifact, not documentation that can rot."""

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_accelerate_configs_parse_and_name_their_engine():
    engines = {}
    for path in sorted((ROOT / "configs" / "accelerate").glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        engines[path.stem] = data["distributed_type"]
        assert data["mixed_precision"] == "bf16" and data["num_processes"] >= 2
    assert engines == {"ddp": "MULTI_GPU", "fsdp": "FSDP", "deepspeed_zero3": "DEEPSPEED"}
