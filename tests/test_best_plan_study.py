"""The pure parts of benchmarks/best_plan_study.py: the bootstrap interval and the row names."""

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

MODULE_SPEC = importlib.util.spec_from_file_location("best_plan_study", Path(__file__).resolve().parents[1] / "benchmarks" / "best_plan_study.py")
study = importlib.util.module_from_spec(MODULE_SPEC)
MODULE_SPEC.loader.exec_module(study)


def test_bootstrap_ppl_is_the_token_weighted_perplexity_with_an_interval_around_it():
    nll, tokens = [200.0, 100.0, 330.0, 90.0], [100, 50, 110, 45]
    ppl, low, high = study.bootstrap_ppl(nll, tokens, resamples=4000)
    assert ppl == pytest.approx(math.exp(720 / 305))
    assert low < ppl < high
    assert low >= math.exp(2.0) - 1e-9 and high <= math.exp(3.0) + 1e-9  # within the passages' own extremes
    assert study.bootstrap_ppl(nll, tokens, resamples=4000) == (ppl, low, high)  # seeded


def test_bootstrap_interval_is_empty_for_identical_passages_and_narrows_with_more_of_them():
    ppl, low, high = study.bootstrap_ppl([50.0] * 8, [25] * 8)
    assert ppl == pytest.approx(math.e**2) and low == pytest.approx(ppl) and high == pytest.approx(ppl)
    rng = np.random.default_rng(0)
    per_token = rng.uniform(2.0, 4.0, 400)
    few = study.bootstrap_ppl(per_token[:20] * 100, [100] * 20)
    many = study.bootstrap_ppl(per_token * 100, [100] * 400)
    assert many[2] - many[1] < few[2] - few[1]


def test_bootstrap_refuses_what_it_cannot_resample():
    with pytest.raises(ValueError, match="two or more passages"):
        study.bootstrap_ppl([1.0], [3])
    with pytest.raises(ValueError, match="positive token count"):
        study.bootstrap_ppl([1.0, 2.0], [3, 0])


def test_row_names():
    assert study.parse_row("shortgpt-ft") == ("shortgpt", True, False)
    assert study.parse_row("interlace+protect") == ("interlace", False, True)
    assert study.parse_row("deepest-block-ft+protect") == ("deepest-block", True, True)
    assert study.parse_row("auto") == ("auto", False, False)
    assert study.parse_row("angular+protect") == ("angular+protect", False, False)  # prune's default, a registered name


def test_row_variants_name_the_controlled_experiments():
    assert study.parse_variant("interlace") == ("interlace", {})
    assert study.parse_variant("interlace@lr1e-4@x4") == ("interlace", {"lr": 1e-4, "budget": 4})
    assert study.parse_variant("shortgpt-ft+protect@kd@seed2") == ("shortgpt-ft+protect", {"loss": "kd", "seed": 2})
    for bad in ("interlace@fast", "interlace@x0", "interlace@seed"):
        with pytest.raises(ValueError, match="unknown change"):
            study.parse_variant(bad)


def test_a_variant_row_is_kept_beside_its_row_not_over_it(tmp_path, monkeypatch):
    import json

    from interlace.config import HealConfig

    monkeypatch.setattr(study, "measure", lambda *held: {"perplexity": 10.0, "ci95": [9.0, 11.0]})
    monkeypatch.setattr(study, "table", lambda out, settings: "")
    monkeypatch.setattr(study, "profile_plot", lambda out, path: None)
    study.row_file(tmp_path, "dense").write_text('{"row": "dense"}')
    study.run_row("dense@seed1", tmp_path, {}, None, None, None, None, None, [], HealConfig(), ((), (), ()), "")
    assert json.loads(study.row_file(tmp_path, "dense").read_text()) == {"row": "dense"}
    variant = json.loads(study.row_file(tmp_path, "dense@seed1").read_text())
    assert variant["row"] == "dense@seed1" and variant["changes"]["seed"] == 1


def test_a_row_runs_in_one_process_at_a_time_and_never_again_once_finished(tmp_path):
    first = study.claim_row(tmp_path, "shortgpt-ft")
    assert first is not None
    assert study.claim_row(tmp_path, "shortgpt-ft") is None  # flock on a second descriptor, as another process
    other = study.claim_row(tmp_path, "angular-ft")  # another row is free
    assert other is not None
    other.close()
    study.row_file(tmp_path, "shortgpt-ft").write_text('{"row": "shortgpt-ft"}')
    first.close()
    assert study.claim_row(tmp_path, "shortgpt-ft") is None  # finished meanwhile
    assert study.claim_row(tmp_path, "angular-ft") is not None  # released when its holder closed it


def test_the_table_gathers_each_rows_healing_seeds():
    rows = {"angular-ft": {"perplexity": 35.6}, "angular-ft@seed1": {"perplexity": 35.7}, "angular-ft@seed2": {"perplexity": 35.9},
            "interlace@lr1e-3": {"perplexity": 47.5}, "interlace@seed1@lr1e-3": {"perplexity": 47.0}, "random@seed1": {"perplexity": 90.0}}
    # a seed of a controlled experiment is not a seed of its row; a seed without its row has nothing to compare with
    assert study.seed_spread(rows, study_seed=0) == {"angular-ft": {0: 35.6, 1: 35.7, 2: 35.9}}


def test_the_paired_ratio_separates_a_small_steady_gap_that_the_passage_intervals_do_not():
    rng = np.random.default_rng(0)
    tokens = np.full(100, 200)
    hardness = rng.uniform(2.0, 4.5, 100)  # nats per token: passages differ far more than the models do
    better, worse = hardness * tokens, (hardness + 0.03 + rng.normal(0, 0.01, 100)) * tokens
    ratio, low, high = study.paired_ratio(worse, better, tokens)
    assert ratio == pytest.approx(math.exp((worse.sum() - better.sum()) / tokens.sum()))
    assert 1.0 < low < ratio < high  # about 3% worse, and the paired interval says so
    _, worse_low, _ = study.bootstrap_ppl(worse, tokens)
    _, _, better_high = study.bootstrap_ppl(better, tokens)
    assert worse_low < better_high  # while the two unpaired intervals overlap
    assert study.paired_ratio(better, better, tokens) == (1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="one nll per model"):
        study.paired_ratio(better[:5], better[:4], tokens[:5])


def test_the_tables_best_row_is_one_of_the_studys_rows_never_a_seed_or_a_controlled_change(tmp_path):
    def row(name, ppl):
        nll = [math.log(ppl) * 100] * 3
        return {"row": name, "perplexity": ppl, "ci95": [ppl - 1, ppl + 1], "passage_nll": nll, "passage_tokens": [100] * 3,
                "continuation": 0.5, "cloze": 0.2, "seconds": {"total": 1.0}}

    for name, ppl in {"angular-ft": 43.5, "shortgpt-ft": 45.0, "angular-ft@seed2": 43.2, "interlace@x4": 40.0}.items():
        (tmp_path / f"row-{name}.json").write_text(json.dumps(row(name, ppl)))
    settings = {"model": "m", "ratio": 0.25, "train": 256, "steps": 32, "batch_size": 8, "lr": 3e-4, "min_tokens": 300, "items": 10, "seed": 0}
    text = study.table(tmp_path, settings)
    assert "/ angular-ft [paired 95%]" in text
    assert "| interlace@x4 |" in text and "| 0.920 [0.920-0.920] |" in text  # 40.0 / 43.5, compared with the best
