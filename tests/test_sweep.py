"""Ratio sweep and budget search on the embedded model (small budgets)."""

import json
import subprocess
import sys

import pytest

from interlace.config import PruneConfig
from interlace.heal.loop import HealConfig
from interlace.sweep import Session, ratio_for, search_ratio


@pytest.fixture(scope="module")
def session():
    heal = HealConfig(lr=1e-3, batch_size=16, micro_batch_size=16)
    return Session(PruneConfig(data="embedded", heal=heal, seed=0, calib_samples=24, train_samples=32, method="interlace"), log=lambda *_: None)


def test_ratio_for_hits_exactly_k_layers():
    from interlace.methods import drop_budget

    for layers in (12, 28, 36):
        assert all(drop_budget(ratio_for(k, layers), layers) == k for k in range(1, layers // 2))


def test_flop_bound_grows_with_k_and_speedup_search_takes_the_smallest_k(session):
    bounds = [session.flop_bound(k) for k in range(1, session.max_feasible() + 1)]
    assert all(b > 1 for b in bounds) and bounds == sorted(bounds)
    ratio, _ = search_ratio(session, target_speedup=bounds[2] - 1e-6)
    assert ratio == ratio_for(3, 12)
    with pytest.raises(ValueError, match="target-speedup"):
        search_ratio(session, target_speedup=10.0)


def test_retention_search_is_a_binary_search_that_meets_its_target(session):
    k_max = session.max_feasible()
    ratio, probes = search_ratio(session, target_retention=0.0, n_per_task=5)
    assert ratio == ratio_for(k_max, 12)  # any model meets retention 0: the largest budget wins
    assert probes[-1].layers_removed == k_max and len(probes) <= k_max.bit_length()


def test_sweep_cli_writes_json_and_two_curves(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "interlace", "sweep", "--ratios", "0.1,0.2", "--out", str(tmp_path / "s"), "--calib-samples", "24",
         "--train-samples", "32", "--eval-samples-per-task", "5", "--no-bench", "--json", str(tmp_path / "s.json")],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((tmp_path / "s.json").read_text())
    assert [p["layers_removed"] for p in report["probes"]] == [1, 2]
    assert all(0 <= p["retention"] and p["flop_bound"] > 1 for p in report["probes"])
    for png in ("retention.png", "speedup.png"):
        assert (tmp_path / "s" / png).read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("method", ["angular", "consecutive-sk"])
def test_a_block_method_probes_any_k_from_one_calibration(method):
    # a regression: the session scored with the default windows (1, 2, 3), so a block of K > 3 ended
    # in a KeyError from scores.s; its plans must equal the method run on scores with s_K itself
    from interlace.calibration import compute_scores
    from interlace.methods import select_layers

    heal = HealConfig(lr=1e-3, batch_size=16, micro_batch_size=16)
    session = Session(PruneConfig(data="embedded", heal=heal, seed=0, calib_samples=24, train_samples=32, method=method), log=lambda *_: None)
    assert session.max_feasible() >= 5
    own = compute_scores(session.model, session.processor, session.calib, ks=(1, 2, 3, 4, 5), progress=False)
    for k in (4, 5):
        plan = session.plan(k)
        assert len(plan.dropped) == k and plan.dropped == list(range(plan.dropped[0], plan.dropped[0] + k))
        assert plan.dropped == select_layers(method, own, ratio_for(k, 12)).dropped


def test_a_session_loads_the_run_prune_would_do():
    """Session is built from the PruneConfig prune runs: its dtype and deepstack reach the model
    (the `sweep` command once built it without either, while --target-retention passed both)."""
    import torch

    heal = HealConfig(lr=1e-3, batch_size=8, micro_batch_size=8)
    run = PruneConfig(data="embedded", heal=heal, calib_samples=8, train_samples=8, dtype="bfloat16", deepstack="protect")
    session = Session(run, log=lambda *_: None)
    assert next(session.model.parameters()).dtype == torch.bfloat16 and session.run.deepstack == "protect"
    assert session.calib and len(session.train) == 8
