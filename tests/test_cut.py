"""The offline cutter gives the in-memory result, and the ``archs`` / ``cut`` commands behave."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from interlace.cli.surgery import parse_drop
from interlace.cut import cut_checkpoint, rename_key
from interlace.evaluation.verify import verify
from interlace.surgery import remove_layers
from tiny_models import BY_NAME, PADDED_LENGTHS, dense_model, make_inputs

# Sharded saves make the cutter stream several files, drop shards that held only removed layers
# and rewrite the index.
CASES = [
    pytest.param("qwen3_vl", [1, 5], "100KB", id="qwen3_vl-deepstack1+last-sharded"),
    pytest.param("qwen3_vl", [0, 2], None, id="qwen3_vl-deepstack0+2"),
    pytest.param("llava", [0, 3], None, id="llava-layer0+3"),
    pytest.param("gemma3", [0, 5], "200KB", id="gemma3-layer0+last-sharded"),
    pytest.param("mllama", [0, 2], None, id="mllama-layer0+cross2"),
    pytest.param("qwen3_moe", [0, 3], "50KB", id="qwen3_moe-layer0+3-sharded"),
]


def _weights(directory: Path) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for path in sorted(directory.glob("*.safetensors")):
        tensors.update(load_file(path))
    return tensors


def _save(model, directory: Path, shard: str | None) -> Path:
    model.save_pretrained(directory, **({"max_shard_size": shard} if shard else {}))
    return directory


@pytest.mark.parametrize("name, drop, shard", CASES)
def test_cut_equals_in_memory_surgery(name, drop, shard, tmp_path):
    src = _save(dense_model(name), tmp_path / "src", shard)
    model = dense_model(name)
    remove_layers(model, drop)
    memory = _save(model, tmp_path / "memory", shard)

    out = cut_checkpoint(src, tmp_path / "cut", drop)

    assert out == tmp_path / "cut"
    assert json.loads((out / "config.json").read_text()) == json.loads((memory / "config.json").read_text())
    ours, theirs = _weights(out), _weights(memory)
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[key], theirs[key]) for key in ours)
    if shard:
        index = json.loads((out / "model.safetensors.index.json").read_text())
        assert set(index["weight_map"]) == set(ours)
        assert {p.name for p in out.glob("*.safetensors")} == set(index["weight_map"].values())
    report = verify(out, model, make_inputs(BY_NAME[name], PADDED_LENGTHS))
    assert report.max_abs_logit_diff == 0.0


def test_rename_key():
    layers, features = {0: 0, 2: 1, 3: 2}, {0: 0, 2: 1}
    prefix = "model.language_model.layers"
    assert rename_key(f"{prefix}.2.mlp.up_proj.weight", prefix, layers, features) == f"{prefix}.1.mlp.up_proj.weight"
    assert rename_key(f"{prefix}.1.mlp.up_proj.weight", prefix, layers, features) is None
    assert rename_key("model.visual.deepstack_merger_list.2.norm.weight", prefix, layers, features) == (
        "model.visual.deepstack_merger_list.1.norm.weight"
    )
    assert rename_key("model.visual.deepstack_merger_list.1.norm.weight", prefix, layers, features) is None
    vit = "model.visual.blocks.1.mlp.weight"
    assert rename_key(vit, prefix, layers, features) == vit
    assert rename_key("lm_head.weight", prefix, layers, {}) == "lm_head.weight"


def test_cut_copies_side_files_and_never_leaves_partial_output(tmp_path):
    src = _save(dense_model("llama"), tmp_path / "src", None)
    (src / "tokenizer_config.json").write_text("{}")
    (src / "pytorch_model.bin").write_bytes(b"stale")
    out = cut_checkpoint(src, tmp_path / "out", [1])
    assert (out / "tokenizer_config.json").is_file() and (out / "generation_config.json").is_file()
    assert not (out / "pytorch_model.bin").exists()
    with pytest.raises(FileExistsError, match="already exists"):
        cut_checkpoint(src, out, [1])
    with pytest.raises(ValueError, match="out of range"):
        cut_checkpoint(src, tmp_path / "bad", [9])
    (out / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no model.safetensors"):
        cut_checkpoint(out, tmp_path / "again", [0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src"]  # no temp dirs left behind


def test_cut_output_directory_gets_the_umask_mode_like_prune(tmp_path):
    import os

    src = _save(dense_model("llama"), tmp_path / "src", None)
    previous = os.umask(0o022)
    try:
        out = cut_checkpoint(src, tmp_path / "out", [1])
        (tmp_path / "made_by_mkdir").mkdir()  # what prune's save_pretrained directory gets
    finally:
        os.umask(previous)
    assert (out.stat().st_mode & 0o777) == (tmp_path / "made_by_mkdir").stat().st_mode & 0o777 == 0o755


# ---------------------------------------------------------------- CLI


def test_archs_json(cli, tmp_path):
    result = CliRunner().invoke(cli, ["archs", "--json", str(tmp_path / "archs.json")])
    assert result.exit_code == 0, result.output
    families = json.loads((tmp_path / "archs.json").read_text())
    assert len(families) >= 14
    assert {"name", "model_types", "layers", "special"} <= set(families[0])
    assert "Qwen3-VL" in result.output


def test_cut_command_writes_and_verifies(cli, tmp_path):
    src = _save(dense_model("qwen3_vl"), tmp_path / "src", None)
    result = CliRunner().invoke(cli, ["cut", str(src), str(tmp_path / "dst"), "--drop", "1,4"])
    assert result.exit_code == 0, result.output
    assert "verified" in result.output
    config = json.loads((tmp_path / "dst" / "config.json").read_text())
    assert config["text_config"]["interlace_kept_layers"] == [0, 2, 3, 5]
    assert config["vision_config"]["deepstack_visual_indexes"] == [0, 2]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--drop", "a,b"], "comma-separated layer indices"),
        (["--drop", "7"], "out of range"),
        (["--drop", "0", "--deepstack", "protect"], "DeepStack"),
    ],
    ids=["not-integers", "out-of-range", "protected"],
)
def test_cut_command_bad_input_is_one_line(cli, tmp_path, args, message):
    src = _save(dense_model("qwen3_vl"), tmp_path / "src", None)
    result = CliRunner().invoke(cli, ["cut", str(src), str(tmp_path / "dst"), *args])
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "dst").exists()


def test_parse_drop():
    assert parse_drop("3, 7,12") == [3, 7, 12]
    with pytest.raises(ValueError, match="3,7,12"):
        parse_drop("")
