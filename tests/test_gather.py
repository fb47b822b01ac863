"""``interlace.heal.gather.whole_model`` rebuilds a cut model of every family from its weights as a
plain model of the same class (what heal returns after FSDP / ZeRO-3 sharded the weights; the
sharded case itself runs in tests/test_distributed.py)."""

from __future__ import annotations

import pytest
import torch

from interlace.arch import get_arch
from interlace.heal.gather import original_class, whole_model
from interlace.surgery import remove_layers
from tiny_models import FAMILIES, PADDED_LENGTHS, dense_model, make_inputs


@pytest.mark.parametrize("family", FAMILIES, ids=lambda family: family.name)
@torch.no_grad()
def test_a_cut_model_is_rebuilt_whole_with_the_same_outputs(family):
    model = dense_model(family.name)
    remove_layers(model, [1, 3])
    model.generation_config.max_new_tokens = 5
    inputs = make_inputs(family, PADDED_LENGTHS)
    rebuilt = whole_model(model, "cpu")
    assert type(rebuilt) is type(model) is original_class(model)
    assert len(get_arch(rebuilt).layers) == len(get_arch(model).layers)
    assert not any(p.requires_grad for p in rebuilt.parameters()) and not rebuilt.training
    assert rebuilt.generation_config.max_new_tokens == 5
    assert torch.equal(rebuilt(**inputs).logits, model.eval()(**inputs).logits)
