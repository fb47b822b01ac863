"""Baselines on hand-made inputs: 2:4 masks, Wanda's score, SLEB's choice, score-based methods."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from interlace.data.chat import IGNORE_INDEX
from interlace.methods import METHODS, get_method, required_ks, select_layers
from interlace.methods.plan import SelectionError
from interlace.methods.sleb import sleb_order
from interlace.methods.sparsity import apply_nm_sparsity, input_norms, magnitude_scores, nm_mask, wanda_scores
from interlace.scores import RedundancyScores
from interlace.surgery import identity_hooks


def test_nm_mask_keeps_exactly_two_of_every_four_largest():
    scores = torch.tensor([[4.0, 1.0, 3.0, 2.0, 0.1, 0.4, 0.3, 0.2], [1.0, 1.0, 1.0, 1.0, -1.0, 5.0, 2.0, 0.0]])
    mask = nm_mask(scores)
    assert mask.tolist() == [
        [True, False, True, False, False, True, True, False],
        [True, True, False, False, False, True, True, False],  # ties keep the lower index
    ]
    big = nm_mask(torch.randn(16, 64))
    assert (big.reshape(16, 16, 4).sum(-1) == 2).all()
    with pytest.raises(ValueError, match="divisible by 4"):
        nm_mask(torch.randn(2, 6))


def test_wanda_scores_weight_magnitude_times_input_norm():
    weight = torch.tensor([[1.0, -2.0, 3.0, -4.0]])
    norms = torch.tensor([4.0, 1.0, 1.0, 0.1])
    assert torch.allclose(wanda_scores(weight, norms), torch.tensor([[4.0, 2.0, 3.0, 0.4]]))
    # magnitude would keep columns 2 and 3; Wanda keeps 0 and 2 because feature 3 is tiny
    assert nm_mask(magnitude_scores(weight)).tolist() == [[False, False, True, True]]
    assert nm_mask(wanda_scores(weight, norms)).tolist() == [[True, False, True, False]]


def tiny_llama(layers: int = 6) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=64,
    )
    return LlamaForCausalLM(config).eval()


def test_input_norms_and_sparsity_on_a_real_model():
    model = tiny_llama(2)
    batch = {"input_ids": torch.randint(0, 64, (2, 9)), "attention_mask": torch.ones(2, 9, dtype=torch.long)}
    batch["attention_mask"][1, :3] = 0
    norms = input_norms(model, [batch])
    x = model.model.embed_tokens(batch["input_ids"])
    q_input = model.model.layers[0].input_layernorm(x)[batch["attention_mask"].bool()]
    assert torch.allclose(norms["0.self_attn.q_proj"], q_input.norm(dim=0), atol=1e-5)
    stats = apply_nm_sparsity(model, "wanda", norms)
    assert stats["linears"] == 14 and abs(stats["zeroed"] - 0.5) < 0.01
    assert model.model.embed_tokens.weight.ne(0).all()  # only decoder linears are touched


def _self_labelled_batch(model, seed):
    torch.manual_seed(seed)
    ids = torch.randint(0, 64, (3, 12))
    with torch.no_grad():
        predicted = model(input_ids=ids).logits.argmax(-1)
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[:, 1:] = predicted[:, :-1]  # the dense model's own next-token choices
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


def test_sleb_removes_the_harmless_layers_first_and_its_cache_changes_nothing():
    model = tiny_llama(6)
    with torch.no_grad():
        for i in (1, 4):  # these layers add exactly zero to the residual stream
            model.model.layers[i].self_attn.o_proj.weight.zero_()
            model.model.layers[i].mlp.down_proj.weight.zero_()
        for i in (0, 2, 3, 5):
            model.model.layers[i].mlp.down_proj.weight.mul_(8)
    batches = [_self_labelled_batch(model, s) for s in range(2)]
    removed, history = sleb_order(model, batches, budget=3, progress=False)
    assert set(removed[:2]) == {1, 4}
    # brute force without the cached replay gives the same per-candidate losses
    for step, scores in enumerate(history):
        for candidate, value in scores.items():
            total = count = 0
            for batch in batches:
                with identity_hooks(model, removed[:step] + [candidate]), torch.no_grad():
                    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
                labels = batch["labels"][:, 1:]
                total += torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX, reduction="sum").item()
                count += int((labels != IGNORE_INDEX).sum())
            assert value == pytest.approx(total / count, rel=1e-5)


def _brute_force_loss(model, batches, removed):
    total = count = 0
    for batch in batches:
        with identity_hooks(model, removed), torch.no_grad():
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
        labels = batch["labels"][:, 1:]
        total += torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX, reduction="sum").item()
        count += int((labels != IGNORE_INDEX).sum())
    return total / count


def test_sleb_order_is_the_brute_force_greedy_order_with_padding_and_protected_layers():
    """The cached replay, the skipped layers and the labelled-positions-only lm_head
    choose what full forwards of every candidate choose."""
    model = tiny_llama(7)
    batches = [_self_labelled_batch(model, s) for s in range(3)]
    batches[0]["attention_mask"][1, 8:] = 0  # right padding, as collate makes it
    batches[0]["labels"][1, 8:] = IGNORE_INDEX
    batches[1]["labels"][:, :6] = IGNORE_INDEX  # a prompt without labels, as in chat data
    protected = (0, 3)
    removed, history = sleb_order(model, batches, budget=4, protected=protected, progress=False)
    expected = []
    for step in range(4):
        losses = {j: _brute_force_loss(model, batches, expected + [j]) for j in range(7) if j not in expected and j not in protected}
        assert history[step] == pytest.approx(losses, rel=1e-5)
        expected.append(min(losses, key=lambda j: (losses[j], j)))
    assert removed == expected


def test_sleb_goes_on_from_its_saved_steps_with_the_uninterrupted_result(tmp_path, monkeypatch):
    """A long SLEB run saves every finished removal step; a rerun on the same inputs takes them as
    done and ends where an uninterrupted run ends. A state for other inputs, or a damaged one, is
    ignored."""
    import json

    from interlace.methods import sleb as sleb_module

    model = tiny_llama(7)
    batches = [_self_labelled_batch(model, s) for s in range(2)]
    fresh = sleb_order(model, batches, budget=4, progress=False)
    state = tmp_path / "select_state.json"

    # Ctrl-C in the middle of step 3: the two finished steps are on disk, the third is not
    real_loss_sum, calls = sleb_module._loss_sum, {"n": 0}

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > (7 + 6) * len(batches) + 3:
            raise KeyboardInterrupt
        return real_loss_sum(*args, **kwargs)

    monkeypatch.setattr(sleb_module, "_loss_sum", interrupted)
    with pytest.raises(KeyboardInterrupt):
        sleb_order(model, batches, budget=4, progress=False, state=state)
    monkeypatch.setattr(sleb_module, "_loss_sum", real_loss_sum)
    assert json.loads(state.read_text())["removed"] == fresh[0][:2]
    assert sleb_order(model, batches, budget=4, progress=False, state=state) == fresh

    # the saved steps are used, not recomputed: a state that says another layer went first wins
    saved = json.loads(state.read_text())
    other = next(j for j in range(7) if j not in fresh[0])
    saved.update(removed=[other], history=[saved["history"][0]])
    state.write_text(json.dumps(saved))
    assert sleb_order(model, batches, budget=2, progress=False, state=state)[0][0] == other

    # other batches, or an unreadable file: start over
    changed = [dict(b) for b in batches]
    changed[1]["labels"] = changed[1]["labels"].clone()
    changed[1]["labels"][:, :4] = IGNORE_INDEX
    assert sleb_order(model, changed, budget=4, progress=False, state=state) == sleb_order(model, changed, budget=4, progress=False)
    state.write_text("{not json")
    assert sleb_order(model, batches, budget=4, progress=False, state=state) == fresh

    # a removal order no run could have saved (a layer out of range, twice, or protected): start over
    saved = json.loads(state.read_text())
    for removed in ([99], [fresh[0][0], fresh[0][0]], [fresh[0][0]]):
        state.write_text(json.dumps({**saved, "removed": removed, "history": saved["history"][: len(removed)]}))
        protected = (fresh[0][0],) if len(removed) == 1 and removed[0] != 99 else ()
        expected = sleb_order(model, batches, budget=4, protected=protected, progress=False)
        if protected:  # the saved state was fingerprinted without protection: refingerprint it
            saved_p = json.loads(state.read_text())
            saved_p["inputs"] = sleb_module._fingerprint(batches, 7, protected)
            state.write_text(json.dumps(saved_p))
        assert sleb_order(model, batches, budget=4, protected=protected, progress=False, state=state) == expected


def scores_for(s1, extra=None):
    n = len(s1)
    similarity = {1: list(s1), 2: [0.5] * (n - 1), 3: [0.5] * (n - 2)}
    similarity.update(extra or {})
    return RedundancyScores(num_layers=n, similarity=similarity, num_samples=1)


def test_shortgpt_drops_the_highest_s1_layers_and_heals_their_successors():
    plan = select_layers("shortgpt", scores_for([0.1, 0.9, 0.2, 0.95, 0.3, 0.8, 0.2, 0.1]), 0.25)
    assert plan.dropped == [1, 3] and plan.finetuned == [2, 4]
    plan = select_layers("shortgpt", scores_for([0.1, 0.9, 0.2, 0.95, 0.3, 0.8, 0.2, 0.1]), 0.25, protected=(3,))
    assert plan.dropped == [1, 5]


def test_angular_picks_the_block_with_the_smallest_angle():
    s2 = {2: [0.1, 0.2, 0.3, 0.99, 0.5, 0.2, 0.1]}  # block of 2 starting at 3 is closest to identity
    plan = select_layers("angular", scores_for([0.5] * 8, s2), 0.25)
    assert plan.dropped == [3, 4] and plan.finetuned == [5, 6]
    assert required_ks("angular", 0.25, 8) == (1, 2, 3)


def test_prunes_default_is_the_angular_block_kept_off_the_fragile_layers():
    """angular+protect: where angular's block reaches the final layer it moves to the deepest block
    that keeps it (Gemma 3 270M's case); where angular's block avoids the fragile layers, the plans
    are the same (SmolLM2-135M's); the user's protection still applies."""
    from interlace.config import DEFAULT_METHOD
    from interlace.methods.protect import fragile_layers

    assert DEFAULT_METHOD == "angular+protect" and METHODS[DEFAULT_METHOD].heals_by_definition
    n = 16  # 4 drops; fragile: the first four and the last one
    deep = {4: [0.5 + 0.03 * i for i in range(13)]}  # S_4 grows with depth: the block 12-15 holds the final layer
    assert select_layers("angular", scores_for([0.5] * n, deep), 0.25).dropped == [12, 13, 14, 15]
    plan = select_layers("angular+protect", scores_for([0.5] * n, deep), 0.25)
    assert plan.dropped == [11, 12, 13, 14] and 15 in fragile_layers(n) and plan.finetuned == [8, 9, 10, 15]
    assert plan.method == "angular+protect" and "kept the fragile layers" in plan.log[-1]
    middle = {4: [0.5] * 6 + [0.99] + [0.5] * 6}  # the block 6-9
    plain, guarded = (select_layers(name, scores_for([0.5] * n, middle), 0.25) for name in ("angular", "angular+protect"))
    assert guarded.dropped == plain.dropped == [6, 7, 8, 9] and guarded.finetuned == plain.finetuned
    assert select_layers("angular+protect", scores_for([0.5] * n, middle), 0.25, protected=(8,)).dropped == [4, 5, 6, 7]  # ties: lowest start
    with pytest.raises(SelectionError, match="no block of 4 unprotected"):
        select_layers("angular+protect", scores_for([0.5] * n, middle), 0.25, protected=(7, 11))


def test_consecutive_and_random_and_interlace_tn():
    s2 = {2: [0.1, 0.9, 0.3, 0.2, 0.5, 0.2, 0.1]}
    assert select_layers("consecutive-sk", scores_for([0.5] * 8, s2), 0.25).to_json()["finetuned"] == [3, 4]
    a = select_layers("random", scores_for([0.5] * 8), 0.25, seed=3)
    b = select_layers("random", scores_for([0.5] * 8), 0.25, seed=3)
    assert a.dropped == b.dropped and len(a.dropped) == 2 and not set(a.dropped) & set(a.finetuned)
    tn = select_layers("interlace-tn", scores_for([0.1, 0.9, 0.8, 0.2, 0.7, 0.1, 0.1, 0.1]), 0.25)
    assert tn.dropped == [1, 4] and tn.finetuned == [2, 5] and tn.anchors == []


def test_registry_lists_every_method_with_a_paper():
    expected = {"interlace", "interlace-oa", "interlace-tn", "shortgpt", "angular", "reverse", "deepest-block", "sleb", "consecutive", "random",
                "magnitude-2:4", "wanda-2:4", "auto", "angular+protect"}
    assert expected <= set(METHODS)
    # every rule from a paper; the chooser follows NVIDIA Model-Optimizer's candidate search
    assert all(m.paper.startswith("https://arxiv.org/abs/") and m.description for n, m in METHODS.items() if n != "auto")
    assert METHODS["auto"].paper == "https://github.com/NVIDIA/TensorRT-Model-Optimizer"
    with pytest.raises(ValueError, match="choose from"):
        get_method("slab")


def test_every_layer_method_has_a_paper_a_heal_rule_and_a_compare_row():
    from interlace.compare import ALL

    for name, method in METHODS.items():
        assert method.paper.startswith("https://") and method.heals and method.description
        if method.kind == "layers":
            assert (name if method.heals_by_definition else f"{name}-ft") in ALL, name
    assert "2411.15558" in METHODS["reverse"].paper and "2403.17887" in METHODS["deepest-block"].paper
    assert METHODS["auto"].needs_train and METHODS["auto"].heals_by_definition


def test_select_layers_asks_auto_for_its_healing_inputs():
    from interlace.scores import RedundancyScores

    scores = RedundancyScores(num_layers=8, similarity={1: [0.5] * 8, 2: [0.5] * 7, 3: [0.5] * 6}, num_samples=1)
    # healing rows without the healing options; without rows (prune --no-heal) nothing is healed
    with pytest.raises(ValueError, match="auto heals candidate plans briefly: pass heal_config= with train="):
        select_layers("auto", scores, 0.25, model=object(), processor=object(), calib=[{}], train=[{}])


def test_random_refuses_more_drops_than_unprotected_layers():
    """It raised numpy's ValueError, which the plan chooser does not expect from a rule that
    cannot place its drops (sweep --ratios 0.1,0.9 under auto ended in a traceback)."""
    from interlace.methods.baselines import random
    from interlace.methods.plan import SelectionError
    from interlace.scores import RedundancyScores

    scores = RedundancyScores(num_layers=8, similarity={1: [0.5] * 8, 2: [0.5] * 7, 3: [0.5] * 6}, num_samples=1)
    with pytest.raises(SelectionError, match="random cannot drop 6 of 8 layers with 3 protected"):
        random(scores, 0.75, protected=(0, 1, 7))
