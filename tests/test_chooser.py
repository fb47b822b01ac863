"""The plan chooser (``--method auto``): its pure parts on hand-made inputs, its choice on the
embedded model and a tiny Gemma 3, and `prune --method auto` end to end."""

import json

import pytest
import torch

from interlace.methods import chooser
from interlace.methods.chooser import brief_count, candidate_plans, choose, shortlist
from interlace.methods.protect import fragile_layers


def test_shortlist_takes_the_lowest_losses_ties_to_the_earlier_label():
    losses = {"a": 2.0, "b": 1.0, "c": 1.5, "d": 1.0}
    assert shortlist(losses, 3) == ["b", "d", "c"]
    assert shortlist(losses, 1) == ["b"]


def test_brief_heal_is_a_fixed_share_of_the_budget_but_at_least_one_step():
    assert brief_count(256, 8) == 64
    assert brief_count(16, 8) == 8  # a quarter would be half a step
    assert brief_count(4, 8) == 4  # never more rows than there are


@pytest.fixture(scope="module")
def embedded():
    from interlace.data import sources
    from interlace.heal.loop import HealConfig
    from interlace.loading import load_model
    from interlace.stages import calibrate

    model, processor = load_model(None)
    calib = sources.load_samples("embedded", "calib", 24)
    train = sources.load_samples("embedded", "train", 64)
    scores = calibrate(model, processor, calib, ["auto"], [0.25], 12, progress=False)
    return model, processor, calib, train, scores, HealConfig(lr=1e-3, batch_size=16, micro_batch_size=16)


def test_candidates_are_every_score_method_plain_and_protected(embedded):
    *_, scores, _ = embedded
    plans, skipped = candidate_plans(scores, 0.25, ())
    # angular+protect, prune's default, is angular's "+protect" variant, not a candidate of its own
    names = {"interlace", "interlace-oa", "interlace-tn", "shortgpt", "angular", "reverse", "deepest-block", "consecutive", "consecutive-sk", "random"}
    assert {label.removesuffix("+protect") for label in [*plans, *skipped]} == names
    assert "reverse" in plans and "reverse+protect" in plans
    for label, (plan, protected) in plans.items():
        assert protected == (fragile_layers(12) if label.endswith("+protect") else ())
        assert not set(plan.dropped) & set(protected) and len(plan.dropped) == 3


def test_the_chooser_keeps_the_finalist_with_the_lowest_measured_loss_and_records_every_candidate(embedded):
    from interlace.methods.sleb import loss_batches, mean_loss
    from interlace.stages import pruned_copy

    model, processor, calib, train, scores, heal_config = embedded
    before = {k: v.clone() for k, v in model.state_dict().items()}
    plan = choose(scores, 0.25, (), model=model, processor=processor, calib=calib, train=train, heal_config=heal_config, progress=False)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the dense model is untouched
    choice = plan.choice
    candidates = {c["label"]: c for c in choice["candidates"]}
    plans, _ = candidate_plans(scores, 0.25, ())
    assert sum(1 + len(c["also"]) for c in candidates.values()) == len(plans)  # every plan, once
    assert all(c["screen_loss"] is not None for c in candidates.values())
    finalists = choice["finalists"]
    top = shortlist({label: c["screen_loss"] for label, c in candidates.items()}, chooser.FINALISTS)
    default = default_label(scores, candidates)
    assert finalists == top + ([] if default in top else [default])  # prune's default is always measured
    assert choice["chosen"] == min(finalists, key=lambda label: candidates[label]["brief_loss"])
    assert plan.method == "auto" and plan.dropped == candidates[choice["chosen"]]["dropped"]
    # The recorded loss is the chosen plan's, healed on the brief share and measured again here.
    rows = choice["cost"]["brief_rows"]
    assert rows == brief_count(len(train), heal_config.batch_size)
    healed = pruned_copy(model, processor, plans[choice["chosen"]][0], train[:rows], heal_config, calib)
    batches = loss_batches(model, processor, calib[: chooser.SCREEN_SAMPLES])
    assert mean_loss(healed, batches) == pytest.approx(candidates[choice["chosen"]]["brief_loss"], abs=1e-4)
    assert choice["cost"]["extra_heal_share"] == pytest.approx(len(finalists) * rows / len(train), abs=1e-3)


def default_label(scores, candidates: dict) -> str:
    """The label of the candidate whose plan is prune's default's."""
    from interlace.config import DEFAULT_METHOD
    from interlace.methods import select_layers

    plan = select_layers(DEFAULT_METHOD, scores, 0.25)
    return next(label for label, c in candidates.items() if (c["dropped"], c["finetuned"]) == (plan.dropped, plan.finetuned))


def test_prunes_default_is_a_finalist_even_where_the_screen_ranks_it_out(embedded, monkeypatch):
    """The unhealed loss does not foresee which plan heals best (Gemma 3 270M: the plan that healed
    best screened eighth of 14), so the default's plan is healed briefly whatever its screen."""
    model, processor, calib, train, scores, heal_config = embedded
    monkeypatch.setattr(chooser, "FINALISTS", 1)
    choice = choose(scores, 0.25, (), model=model, processor=processor, calib=calib, train=train, heal_config=heal_config, progress=False).choice
    candidates = {c["label"]: c for c in choice["candidates"]}
    default = default_label(scores, candidates)
    best_screened = shortlist({label: c["screen_loss"] for label, c in candidates.items()}, 1)[0]
    assert choice["finalists"] == [best_screened] + ([] if default == best_screened else [default])
    assert candidates[default]["brief_loss"] is not None
    assert sum(c["brief_loss"] is not None for c in candidates.values()) == len(choice["finalists"])


def test_the_chooser_honours_protection(embedded):
    model, processor, calib, train, scores, heal_config = embedded
    plan = choose(scores, 0.25, (9, 10, 11), model=model, processor=processor, calib=calib, train=train, heal_config=heal_config, progress=False)
    assert not {9, 10, 11} & set(plan.dropped)
    for candidate in plan.choice["candidates"]:
        assert not {9, 10, 11} & set(candidate["dropped"]) and {9, 10, 11} <= set(candidate["protected"])


def test_the_chooser_on_a_tiny_gemma3_text_model():
    """Another family, text only: plain-text rows where every token is a target."""
    from interlace.heal.loop import HealConfig
    from interlace.stages import calibrate
    from test_text_models import WORDS, word_tokenizer
    from tiny_models import dense_model

    model, processor = dense_model("gemma3_text"), word_tokenizer(None)
    rows = [{"images": [], "texts": [], "text": " ".join(WORDS[i : i + 12]), "source": "t"} for i in range(16)]
    layers = model.config.num_hidden_layers
    scores = calibrate(model, processor, rows[:8], ["auto"], [0.25], layers, progress=False)
    plan = choose(scores, 0.25, (), model=model, processor=processor, calib=rows[:8], train=rows[8:],
                  heal_config=HealConfig(lr=1e-3, batch_size=4, micro_batch_size=4), progress=False)
    assert len(plan.dropped) == layers // 4 and plan.choice["chosen"] in plan.choice["finalists"]


def test_prune_method_auto_records_every_candidate_in_the_manifest(tmp_path):
    from interlace.heal.loop import HealConfig
    from interlace.pipeline import PruneConfig, prune

    out = tmp_path / "auto"
    config = PruneConfig(out=out, method="auto", protect="0", calib_samples=24, train_samples=32, eval_samples_per_task=5,
                         heal=HealConfig(lr=1e-3, batch_size=16, micro_batch_size=16))
    report = prune(config, log=lambda *_: None)
    manifest = json.loads((out / "interlace_manifest.json").read_text())
    choice = manifest["report"]["plan"]["choice"]
    assert report.plan["method"] == "auto" and 0 not in report.plan["dropped"]
    assert len(choice["candidates"]) >= 5 and all(0 in c["protected"] for c in choice["candidates"])
    assert {"screen_seconds", "brief_heal_seconds", "extra_heal_share"} <= set(choice["cost"])


def test_without_healing_data_the_lowest_unhealed_loss_wins_and_nothing_is_healed(embedded, monkeypatch):
    """prune --no-heal leaves the plan unhealed, so brief heals would measure a model the user never
    gets: the chooser keeps the plan of lowest screening loss and heals nothing."""
    from interlace import stages

    model, processor, calib, _, scores, heal_config = embedded
    monkeypatch.setattr(stages, "heal_plan", lambda *a, **k: pytest.fail("healed without healing data"))
    plan = choose(scores, 0.25, (), model=model, processor=processor, calib=calib, train=None, heal_config=heal_config, progress=False)
    candidates = {c["label"]: c for c in plan.choice["candidates"]}
    assert plan.choice["chosen"] == shortlist({label: c["screen_loss"] for label, c in candidates.items()}, 1)[0]
    assert all(c["brief_loss"] is None for c in candidates.values()) and plan.choice["cost"]["brief_rows"] == 0
