"""The architecture table: layer lookup on real tiny models, config edits on real configs, errors."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    Llama4TextConfig,
    MllamaConfig,
    Phi3Config,
    Phi3ForCausalLM,
    Qwen2Config,
    Qwen2MoeConfig,
    Qwen3MoeConfig,
)

from interlace.arch import (
    BY_MODEL_TYPE,
    KEPT_FIELD,
    UnsupportedModelError,
    checkpoint_layer_prefix,
    cut_config,
    get_arch,
    plan_kept,
    special_layers,
    supported_families,
)
from tiny_models import FAMILIES, NUM_LAYERS, dense_model


def test_table_and_matrix_cover_each_other():
    listed = {t for family in supported_families() for t in family["model_types"]}
    tested = {family.model_type for family in FAMILIES}
    assert len(supported_families()) >= 14
    assert listed == tested, "every table row needs a tiny model in tests/tiny_models.py and vice versa"


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_get_arch_finds_the_decoder_layers(family):
    model = dense_model(family.name)
    arch = get_arch(model)
    assert arch.family == BY_MODEL_TYPE[family.model_type].name
    assert arch.layers_path == BY_MODEL_TYPE[family.model_type].layers_path
    assert model.get_submodule(arch.layers_path) is arch.layers
    assert len(arch.layers) == NUM_LAYERS == arch.text_config.num_hidden_layers
    assert arch.decoder.config is arch.text_config  # surgery edits the object the decoder reads
    assert arch.protected == ()


def test_qwen3_vl_deepstack_layers_are_special_and_protectable():
    model = dense_model("qwen3_vl")
    assert get_arch(model).special == {0: "receives DeepStack feature 0", 1: "receives DeepStack feature 1",
                                       2: "receives DeepStack feature 2"}
    assert get_arch(model, deepstack="protect").protected == (0, 1, 2)


def test_mllama_cross_attention_layers_are_special():
    assert special_layers(dense_model("mllama").config) == {2: "cross-attention layer", 4: "cross-attention layer"}


def test_unsupported_model_names_type_and_lists_supported():
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=64))
    with pytest.raises(UnsupportedModelError, match=r"'gpt2' is not supported.*llama.*qwen3_vl"):
        get_arch(model)


def test_generic_fallback_through_get_decoder():
    model = Phi3ForCausalLM(Phi3Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                       num_attention_heads=2, pad_token_id=0))
    arch = get_arch(model)
    assert (arch.family, arch.layers_path) == ("generic", "model.layers")
    assert "fallback" in arch.notes


def test_unknown_per_layer_field_is_refused():
    model = dense_model("llama")
    model.config.attention_window_layers = [0, 2]
    with pytest.raises(UnsupportedModelError, match="attention_window_layers"):
        get_arch(model)


@pytest.mark.parametrize(
    "drop, message",
    [
        ([6], r"\[6\] are out of range: the model has 6 decoder layers \(0..5\)"),
        ([-1], "out of range"),
        ([1, 1], "duplicate"),
        ([0, 1, 2, 3, 4, 5], "cannot remove all 6"),
        ([1.0], "must be integers"),
    ],
    ids=["past-end", "negative", "duplicate", "all", "float"],
)
def test_plan_kept_rejects_bad_indices(drop, message):
    with pytest.raises(ValueError, match=message):
        plan_kept(dense_model("llama").config, drop)


def test_plan_kept_accepts_numpy_and_torch_integers():
    import numpy as np

    assert plan_kept(dense_model("llama").config, [np.int64(0), torch.tensor(5)]) == [1, 2, 3, 4]
    with pytest.raises(ValueError, match="must be integers"):
        plan_kept(dense_model("llama").config, [True])


def test_plan_kept_policies():
    config = dense_model("qwen3_vl").config
    assert plan_kept(config, [1, 4]) == [0, 2, 3, 5]
    with pytest.raises(ValueError, match=r"layers \[1\] receive DeepStack .* deepstack='realign'"):
        plan_kept(config, [1, 4], deepstack="protect")
    with pytest.raises(ValueError, match="not a policy"):
        plan_kept(config, [4], deepstack="shift")
    with pytest.raises(ValueError, match="cross-attention layer 2"):
        plan_kept(dense_model("mllama").config, [0, 1])


# ---------------------------------------------------------------- cut_config on real configs


def test_cut_config_qwen2_sliding_window_layers():
    config = Qwen2Config(num_hidden_layers=6, use_sliding_window=True, max_window_layers=3)
    cut_config(config, [0, 2, 4, 5])
    assert config.layer_types == ["full_attention"] * 2 + ["sliding_attention"] * 2
    assert config.max_window_layers == 2  # the rule i >= max_window_layers still gives layer_types
    config.validate()


def test_cut_config_qwen3_moe_pattern_becomes_explicit():
    config = Qwen3MoeConfig(num_hidden_layers=6, decoder_sparse_step=2, mlp_only_layers=[3])
    cut_config(config, [1, 2, 3, 5])  # originally MoE: 1, 5 (3 is forced dense); dense: 0, 2, 3, 4
    assert (config.decoder_sparse_step, config.mlp_only_layers) == (1, [1, 2])


def test_cut_config_qwen2_moe():
    config = Qwen2MoeConfig(num_hidden_layers=4, decoder_sparse_step=1, mlp_only_layers=[2])
    cut_config(config, [0, 2, 3])
    assert config.mlp_only_layers == [1]


def test_cut_config_llama4_lists():
    config = Llama4TextConfig(num_hidden_layers=8, interleave_moe_layer_step=2, no_rope_layer_interval=4)
    moe, rope, types = list(config.moe_layers), list(config.no_rope_layers), list(config.layer_types)
    kept = [0, 1, 3, 4, 7]
    cut_config(config, kept)
    assert config.moe_layers == [p for p, k in enumerate(kept) if k in moe]
    assert config.no_rope_layers == [rope[k] for k in kept]
    assert config.layer_types == [types[k] for k in kept]
    config.validate()


def test_cut_config_mllama_cross_attention_layers():
    config = MllamaConfig(text_config={"num_hidden_layers": 10, "cross_attention_layers": [3, 8]})
    cut_config(config, [0, 1, 2, 3, 5, 6, 9])
    assert config.text_config.cross_attention_layers == [3]


def test_cut_config_records_kept_layers_across_cuts():
    config = Qwen2Config(num_hidden_layers=6)
    cut_config(config, [1, 2, 3, 4, 5])
    cut_config(config, [0, 2, 3])
    assert getattr(config, KEPT_FIELD) == [1, 3, 4]
    assert config.num_hidden_layers == 3


def test_cut_config_qwen3_vl_drops_deepstack_entries():
    config = dense_model("qwen3_vl").config
    changes = cut_config(config, [0, 2, 3, 4, 5])
    assert config.vision_config.deepstack_visual_indexes == [0, 2] == changes["deepstack_visual_indexes"]


def test_checkpoint_layer_prefix_handles_legacy_layout():
    config = dense_model("llava").config
    keys = [f"language_model.model.layers.{i}.mlp.up_proj.weight" for i in range(NUM_LAYERS)]
    keys += [f"vision_tower.encoder.layers.{i}.fc1.weight" for i in range(NUM_LAYERS)]
    assert checkpoint_layer_prefix(config, keys) == "language_model.model.layers"
    with pytest.raises(UnsupportedModelError, match="no unique decoder-layer prefix"):
        checkpoint_layer_prefix(config, keys[:3])


def test_get_arch_rejects_half_edited_model():
    model = dense_model("llama")
    del model.model.layers[0]
    with pytest.raises(ValueError, match="5 layers but num_hidden_layers is 6"):
        get_arch(model)
    assert torch.get_num_threads() == 1  # conftest keeps the matrix on one thread


def test_cut_config_gemma3_keeps_no_stale_sliding_window_pattern(tmp_path):
    config = dense_model("gemma3_text").config
    cut_config(config, [0, 2, 3])  # pattern 2: sliding, full, sliding, full, ... -> s, s, f
    assert config.layer_types == ["sliding_attention", "sliding_attention", "full_attention"]
    saved = config.to_dict()
    assert "sliding_window_pattern" not in saved and "_sliding_window_pattern" not in saved
    config.save_pretrained(tmp_path)
    assert type(config).from_pretrained(tmp_path).layer_types == config.layer_types
