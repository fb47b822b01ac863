"""INTERLACE selection on hand-made score arrays: ranking, drop rule, ties, adjacency, exhaustion."""

import numpy as np
import pytest

from interlace.methods import Plan, SelectionError, drop_budget, interlace_select


def select(s1, s3, budget, s2=None, **kw):
    n = len(s1) + 1
    s2 = np.zeros(n - 2) if s2 is None else s2
    return interlace_select(np.array(s1, float), np.array(s2, float), np.array(s3, float), budget, n, **kw)


def test_best_triplet_drops_the_more_redundant_of_its_first_two_layers():
    # L = 8; triplet starts 0..4 (s3 has L - 3 entries), s1 has L - 1 entries.
    s1 = [0.1, 0.2, 0.9, 0.3, 0.1, 0.1, 0.1]
    s3 = [0.1, 0.2, 0.3, 0.8, 0.2]
    plan = select(s1, s3, 1)
    assert (plan.dropped, plan.finetuned, plan.anchors) == ([3], [4], [5])  # s1[3] 0.3 >= s1[4] 0.1
    plan = select([0.1, 0.2, 0.9, 0.3, 0.6, 0.1, 0.1], s3, 1)
    assert (plan.dropped, plan.finetuned, plan.anchors) == ([4], [3], [5])


def test_s1_tie_drops_the_first_layer_and_s3_tie_prefers_the_lower_start():
    s1 = [0.5] * 7
    s3 = [0.7, 0.2, 0.2, 0.7, 0.2]
    plan = select(s1, s3, 1)
    assert plan.groups[0].start == 0 and plan.dropped == [0] and plan.finetuned == [1] and plan.anchors == [2]


def test_triplets_are_disjoint_but_may_be_adjacent():
    s1 = [0.5] * 8  # L = 9
    s3 = [0.9, 0.95, 0.1, 0.8, 0.1, 0.1]  # start 1 wins; 0 overlaps it; 3 overlaps too (layer 3); then 4..
    plan = select(s1, s3, 2)
    starts = [g.start for g in plan.groups]
    assert starts[0] == 1
    assert all(len(set(range(a, a + 3)) & set(range(b, b + 3))) == 0 for a in starts for b in starts if a != b)
    s3 = [0.9, 0.1, 0.1, 0.8, 0.1, 0.1]  # 0-2 and 3-5 are adjacent and disjoint
    assert [g.start for g in select(s1, s3, 2).groups] == [0, 3]


def test_pair_fallback_when_triplets_run_out_is_logged():
    s1 = [0.5] * 6  # L = 7: triplet starts 0..3, pair starts 0..4
    s3 = [0.1, 0.9, 0.1, 0.1]  # 1-3 taken; every other triplet overlaps it
    s2 = [0.1, 0.2, 0.3, 0.4, 0.6]  # best free pair: (4, 5)
    plan = select(s1, s3, 2, s2=s2)
    assert plan.path == "triplets+pairs" and any("pairs" in line for line in plan.log)
    pair = [g for g in plan.groups if g.kind == "pair"][0]
    assert (pair.start, pair.drop, pair.finetune, pair.anchor) == (4, 4, 5, None)
    assert plan.anchors == [3] and plan.dropped == [1, 4]


def test_exhaustion_raises_with_a_fix():
    with pytest.raises(SelectionError, match="lower --ratio"):
        select([0.5] * 5, [0.1, 0.9, 0.1], 3, s2=[0.1] * 5)


def test_protected_layers_are_never_dropped():
    s1 = [0.1, 0.9, 0.1, 0.1, 0.1, 0.1, 0.1]
    s3 = [0.9, 0.1, 0.1, 0.5, 0.1]
    plan = select(s1, s3, 1, protected=(1,))
    assert 1 not in plan.dropped and plan.groups[0].start == 3


def test_one_after_rule_always_drops_the_first():
    s1 = [0.1, 0.9, 0.1, 0.1, 0.1, 0.1, 0.1]
    s3 = [0.9, 0.1, 0.1, 0.1, 0.1]
    assert select(s1, s3, 1, drop_rule="first").dropped == [0]
    assert select(s1, s3, 1).dropped == [1]


def test_budget_and_plan_bookkeeping():
    assert [drop_budget(r, 36) for r in (0.10, 0.15, 0.20, 0.25)] == [3, 5, 7, 9]
    assert drop_budget(0.25, 12) == 3
    with pytest.raises(ValueError):
        drop_budget(0, 12)
    plan = select([0.5] * 11, [0.9, 0.1, 0.1, 0.8, 0.1, 0.1, 0.7, 0.1, 0.1], 3)
    assert plan.kept == [i for i in range(12) if i not in plan.dropped]
    assert set(plan.frozen) | set(plan.finetuned) == set(plan.kept)
    assert [plan.kept[i] for i in plan.finetuned_after_cut] == plan.finetuned
    assert Plan.from_json(plan.to_json()).to_json() == plan.to_json()


# The consecutive ablation: the released definition, its S_K variant, and K = 0.


def scores(num_layers, s1, s2=None):
    """s_1 (L - 1 entries) and s_2 (L - 2) as given, s_3 flat; each plus the final-state entry."""
    from interlace.scores import RedundancyScores

    s2 = [0.5] * (num_layers - 2) if s2 is None else s2
    similarity = {1: [*s1, 0.0], 2: [*s2, 0.0], 3: [0.5] * (num_layers - 2)}
    return RedundancyScores(num_layers=num_layers, similarity=similarity, num_samples=1)


def test_consecutive_starts_at_the_highest_s1_and_finetunes_the_next_k():
    from interlace.methods import select_layers

    # L = 8, K = 2; the highest S1 is layer 3: drop 3, 4 and finetune 5, 6.
    plan = select_layers("consecutive", scores(8, [0.1, 0.2, 0.3, 0.9, 0.8, 0.1, 0.1]), 0.25)
    assert (plan.dropped, plan.finetuned, plan.anchors) == ([3, 4], [5, 6], [])
    # The highest S1 is layer 6, where the block and its finetuned layers would not fit in 8
    # layers; the best start that fits (i + 2K <= L, so i <= 4) is taken: layer 1.
    plan = select_layers("consecutive", scores(8, [0.1, 0.5, 0.3, 0.2, 0.4, 0.1, 0.99]), 0.25)
    assert (plan.dropped, plan.finetuned) == ([1, 2], [3, 4])
    plan = select_layers("consecutive", scores(8, [0.1, 0.9, 0.3, 0.2, 0.4, 0.1, 0.1]), 0.25, protected=(2,))
    assert plan.dropped == [4, 5] and plan.finetuned == [6, 7]  # blocks over layer 2 are skipped


def test_consecutive_sk_keeps_the_old_rule_under_its_own_name():
    from interlace.methods import METHODS, required_ks, select_layers

    s2 = [0.1, 0.9, 0.3, 0.2, 0.5, 0.2]  # S_2 is best at 1; S1 is best at 3
    s1 = [0.1, 0.1, 0.1, 0.9, 0.1, 0.1, 0.1]
    plan = select_layers("consecutive-sk", scores(8, s1, s2), 0.25)
    assert (plan.dropped, plan.finetuned) == ([1, 2], [3, 4])
    assert select_layers("consecutive", scores(8, s1, s2), 0.25).dropped == [3, 4]
    assert "S1" in METHODS["consecutive"].description and "2511.19676" in METHODS["consecutive"].paper
    assert required_ks("consecutive", 0.25, 8) == (1, 2, 3) and 2 in required_ks("consecutive-sk", 0.25, 8)


def test_a_block_that_cannot_fit_is_a_clear_error():
    from interlace.methods import select_layers

    with pytest.raises(SelectionError, match="followed by 5 to finetune.*lower --ratio"):
        select_layers("consecutive", scores(8, [0.5] * 7), 0.65)


@pytest.mark.parametrize("method", ["consecutive", "consecutive-sk", "angular", "interlace", "shortgpt", "random"])
def test_a_ratio_that_drops_no_layer_is_the_same_clear_error_for_every_method(method):
    from interlace.methods import select_layers

    with pytest.raises(SelectionError, match=r"K = floor\(ratio x L\) = 0 removes no layer of 8; raise --ratio"):
        select_layers(method, scores(8, [0.5] * 7), 0.1)


# The field's baselines (arXiv 2411.15558, 2403.17887) and --protect.


def test_reverse_drops_the_deepest_layers_and_heals_the_last_three_kept():
    from interlace.methods import METHODS, select_layers

    plan = select_layers("reverse", scores(12, [0.5] * 11), 0.25)  # K = 3
    assert (plan.dropped, plan.finetuned) == ([9, 10, 11], [6, 7, 8])
    plan = select_layers("reverse", scores(12, [0.5] * 11), 0.25, protected=(10, 11))
    assert (plan.dropped, plan.finetuned) == ([7, 8, 9], [6, 10, 11])  # protected layers may still train
    assert "2411.15558" in METHODS["reverse"].paper and "last three" in METHODS["reverse"].heals


def test_deepest_block_keeps_the_final_layer():
    from interlace.methods import METHODS, select_layers

    plan = select_layers("deepest-block", scores(12, [0.5] * 11), 0.25)
    # each dropped layer's successor heals: 11 after 8, then the kept layers before the block
    assert (plan.dropped, plan.finetuned) == ([8, 9, 10], [6, 7, 11])
    assert select_layers("deepest-block", scores(12, [0.5] * 11), 0.25, protected=(9,)).dropped == [7, 8, 10]
    assert "2403.17887" in METHODS["deepest-block"].paper


def test_parse_protect_reads_first_last_and_indices_and_refuses_the_rest():
    from interlace.methods.protect import parse_protect

    assert parse_protect("first:4,last:2", 30) == (0, 1, 2, 3, 28, 29)
    assert parse_protect(" 0, 5 ,first:2", 30) == (0, 1, 5)
    assert parse_protect("", 30) == ()
    with pytest.raises(ValueError, match=r"--protect 'top:3': 'top:3' is not first:N, last:M or a layer index; write e\.g\."):
        parse_protect("top:3", 30)
    with pytest.raises(ValueError, match=r"30 is beyond the model's 30 layers \(0\.\.29\)"):
        parse_protect("30", 30)
    with pytest.raises(ValueError, match=r"last:31 is beyond the model's 30 layers \(at most 30\)"):
        parse_protect("last:31", 30)


SCORE_METHODS = ["interlace", "interlace-oa", "interlace-tn", "shortgpt", "angular", "reverse", "deepest-block", "consecutive", "consecutive-sk", "random"]


@pytest.mark.parametrize("method", SCORE_METHODS)
def test_every_layer_method_honours_protection(method):
    """Protect the layers a method drops unprotected: it drops as many, none of them again."""
    from interlace.methods import select_layers

    rng = np.random.default_rng(0)
    s = scores(16, list(rng.uniform(0.3, 0.9, 15)), list(rng.uniform(0.3, 0.9, 14)))
    free = select_layers(method, s, 0.2)
    guarded = select_layers(method, s, 0.2, protected=tuple(free.dropped))
    assert len(guarded.dropped) == len(free.dropped) == 3
    assert not set(guarded.dropped) & set(free.dropped)


def test_a_budget_that_cannot_fit_beside_protected_layers_is_a_validation_error(tmp_path):
    from interlace.config import PruneConfig, protect_problems, validate

    assert protect_problems("first:4,last:2", ["reverse"], [0.25], 12) == []
    problems = protect_problems("first:6,last:4", ["reverse", "shortgpt-ft"], [0.25], 12)
    fix = "but --protect leaves only 2 unprotected; lower --ratio or protect fewer layers (--protect first:6,last:4)"
    assert problems == [f"--ratio 0.25 asks {m} to drop 3 of 12 layers, {fix}" for m in ("reverse", "shortgpt")]
    assert protect_problems("first:x", ["reverse"], [0.25], None) == [
        "--protect 'first:x': 'first:x' is not first:N, last:M or a layer index; write e.g. first:4,last:2 or 0,1,29"
    ]
    with pytest.raises(Exception, match="--protect leaves only 2 unprotected"):  # the embedded model has 12 layers
        validate(PruneConfig(out=tmp_path / "out", method="shortgpt", protect="first:6,last:4"))
    assert not (tmp_path / "out").exists()
