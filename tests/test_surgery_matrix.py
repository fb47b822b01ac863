"""Every family x drop set: the pruned model is the dense model with those layers made identity.

For each case, on a left-padded batch of two image + text prompts (text only for LLMs):
- forward logits equal the identity-hook reference bitwise (fp32);
- cached greedy generation equals uncached generation (the stale-layer_idx bug shows here);
- save -> plain ``from_pretrained`` gives identical logits and passes ``verify``;
- ``config.validate()`` passes.
"""

from __future__ import annotations

import pytest
import torch

from interlace.arch import KEPT_FIELD, get_arch
from interlace.evaluation.verify import VerificationError, verify
from interlace.surgery import identity_hooks, remove_layers
from tiny_models import BY_NAME, FAMILIES, NUM_LAYERS, PADDED_LENGTHS, QWEN3_VL_DEEPSTACK, dense_model, make_inputs

DROP_SETS = {"layer0": [0], "middle-pair": [2, 3], "last": [NUM_LAYERS - 1]}
DEEPSTACK_SETS = {"deepstack1": [1], "deepstack0+2+last": [0, 2, NUM_LAYERS - 1]}
CASES = [
    pytest.param(family.name, drop, id=f"{family.name}-{label}")
    for family in FAMILIES
    for label, drop in {**DROP_SETS, **(DEEPSTACK_SETS if family.deepstack else {})}.items()
]


def _generate(model, inputs, use_cache: bool) -> torch.Tensor:
    return model.generate(**inputs, max_new_tokens=4, do_sample=False, use_cache=use_cache, pad_token_id=0)


def _pruned(name: str, drop: list[int]):
    model = dense_model(name)
    result = remove_layers(model, drop)
    return model, result


@pytest.mark.parametrize("name, drop", CASES)
@torch.no_grad()
def test_forward_equals_identity_reference(name, drop):
    family = BY_NAME[name]
    dense = dense_model(name)
    model, result = _pruned(name, drop)
    assert len(get_arch(model).layers) == NUM_LAYERS - len(drop)
    assert result.kept == [i for i in range(NUM_LAYERS) if i not in drop]
    for lengths in ((7,), PADDED_LENGTHS):
        inputs = make_inputs(family, lengths)
        with identity_hooks(dense, drop):
            reference = dense(**inputs).logits
        assert torch.equal(model(**inputs).logits, reference), f"{name} without {drop}, batch {lengths}"
    # The hooks are gone after the block: the dense model is dense again.
    assert not torch.equal(dense(**inputs).logits, reference)


@pytest.mark.parametrize("name, drop", CASES)
@torch.no_grad()
def test_cached_generation_equals_uncached(name, drop):
    model, _ = _pruned(name, drop)
    inputs = make_inputs(BY_NAME[name], PADDED_LENGTHS)
    assert torch.equal(_generate(model, inputs, use_cache=True), _generate(model, inputs, use_cache=False))


@pytest.mark.parametrize("name, drop", CASES)
def test_save_reload_is_identical(name, drop, tmp_path):
    model, _ = _pruned(name, drop)
    config = model.config
    if hasattr(config, "validate"):
        config.validate()
    model.save_pretrained(tmp_path)
    report = verify(tmp_path, model, make_inputs(BY_NAME[name], PADDED_LENGTHS))
    assert report.max_abs_logit_diff == 0.0
    assert report.generation_note == "identical"
    assert report.num_layers == NUM_LAYERS - len(drop)
    assert report.kept_layers == [i for i in range(NUM_LAYERS) if i not in drop]


# ---------------------------------------------------------------- beyond the matrix


@torch.no_grad()
def test_two_cuts_compose():
    family = BY_NAME["qwen3"]
    twice, _ = _pruned("qwen3", [0])
    result = remove_layers(twice, [1])  # original layer 2
    once, _ = _pruned("qwen3", [0, 2])
    assert result.kept == [1, 3, 4, 5] == getattr(twice.config, KEPT_FIELD)
    inputs = make_inputs(family, PADDED_LENGTHS)
    assert torch.equal(twice(**inputs).logits, once(**inputs).logits)


def test_deepstack_realign_drops_feature_and_merger():
    model, result = _pruned("qwen3_vl", [1, 4])
    visual = model.model.visual
    assert result.deepstack_dropped == [1]
    assert len(visual.deepstack_merger_list) == QWEN3_VL_DEEPSTACK - 1
    assert visual.deepstack_visual_indexes == [0, 2] == model.config.vision_config.deepstack_visual_indexes


@torch.no_grad()
def test_deepstack_without_realign_would_shift_features():
    """Control: cutting layer 1 but keeping all features moves feature 1 onto original layer 2."""
    family = BY_NAME["qwen3_vl"]
    dense, naive = dense_model("qwen3_vl"), dense_model("qwen3_vl")
    layers = get_arch(naive).layers
    del layers[1]
    for position, layer in enumerate(layers):
        layer.self_attn.layer_idx = position
    naive.config.text_config.num_hidden_layers = NUM_LAYERS - 1
    inputs = make_inputs(family)
    with identity_hooks(dense, [1]):
        reference = dense(**inputs).logits
    assert not torch.equal(naive(**inputs).logits, reference)


def test_deepstack_protect_refuses():
    model = dense_model("qwen3_vl")
    with pytest.raises(ValueError, match="DeepStack"):
        remove_layers(model, [0], deepstack="protect")
    with pytest.raises(ValueError, match="DeepStack"), identity_hooks(model, [2], deepstack="protect"):
        pass
    assert len(get_arch(model).layers) == NUM_LAYERS  # refused before touching anything
    remove_layers(model, [3, 5], deepstack="protect")
    assert len(model.model.visual.deepstack_merger_list) == QWEN3_VL_DEEPSTACK


def test_verify_catches_stale_layer_idx(tmp_path):
    """Control: without renumbering, the in-memory model's cached generation goes wrong after layer 0 goes."""
    model = dense_model("llama")
    del model.model.layers[0]
    model.config.num_hidden_layers = NUM_LAYERS - 1
    model.save_pretrained(tmp_path)
    with pytest.raises(VerificationError, match="in-memory model"):
        verify(tmp_path, model, make_inputs(BY_NAME["llama"], PADDED_LENGTHS))


def test_verify_catches_stale_num_hidden_layers(tmp_path):
    """Control: layers deleted but the config still says 6, so a reload invents random layers."""
    model = dense_model("llava")
    del model.model.language_model.layers[5]
    model.save_pretrained(tmp_path)
    with pytest.raises(VerificationError, match=r"tensor\(s\) the config needs are missing \(model\.language_model\.layers\.5\."):
        verify(tmp_path, model)


def test_verify_builds_image_text_input_from_saved_processor(tmp_path):
    from transformers import LlavaForConditionalGeneration

    from embedded_build import build_config, build_processor

    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(build_config(hidden_size=64, num_layers=4, vision_hidden_size=32)).eval()
    remove_layers(model, [0, 2])
    model.save_pretrained(tmp_path)
    build_processor().save_pretrained(tmp_path)
    report = verify(tmp_path, model)
    assert report.input_kind == "processor: image + text"
    assert (report.max_abs_logit_diff, report.kept_layers) == (0.0, [1, 3])
