"""Ratio sweeps and budget search on one calibration.

``sweep`` runs the pipeline (select, cut, heal, evaluate, time) at several ratios from one set
of scores and draws retention-vs-ratio and speedup-vs-ratio. ``search_ratio`` finds the largest
ratio whose healed model keeps a target retention on a validation split (the suite's calibration
questions, never the held-out test), or the smallest whose FLOP-bound prefill speedup reaches a
target, so `interlace prune --target-retention / --target-speedup` can pick the ratio itself.

A ``Session`` is built from the run `interlace prune` would do (a ``PruneConfig``, validated as
prune's is), so a sweep or a search probes the model prune will cut, with the same options.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from interlace.config.options import ConfigError, PruneConfig
from interlace.evaluation.suites import format_retention


@dataclass
class Probe:
    ratio: float
    layers_removed: int
    retention: float | None = None
    overall: float | None = None
    speedup: float | None = None
    flop_bound: float | None = None
    dropped: list[int] = field(default_factory=list)


def ratio_for(k: int, num_layers: int) -> float:
    """The ratio whose floor(ratio * L) is exactly k (midway, so float error cannot round it off)."""
    return round((k + 0.5) / num_layers, 4)


class Session:
    """A dense model with its scores, data and dense accuracy, reused by every probe.

    Built from ``run``, the run `interlace prune` would do: its model, data, method, sample
    counts, healing (``do_heal`` off: probes are not healed), seed, dtype, deepstack, protected
    layers and calibration options. A probe chooses the ratio (``run.ratio`` is not used);
    ``sweep`` writes under ``run.out``.

    Raises:
        ConfigError: ``run`` does not validate (``interlace.config.validate``, a report's checks:
            a held-out suite must score the model on ``run.data``), before anything loads.
    """

    def __init__(self, run: PruneConfig, *, log=print):
        import torch

        from interlace.arch import get_arch
        from interlace.config.validation import default_heal, train_sample_count, validate, with_model_defaults
        from interlace.data import sources
        from interlace.evaluation.suites import suite_for
        from interlace.loading import load_model
        from interlace.stages import calibrate

        validate(run, ratios=(), report=True)  # the ratios are the probes' (sweep checks its own)
        run = with_model_defaults(run)
        self.run, self.log, self.method, self.seed = run, log, run.method, run.seed
        self.model, self.processor = load_model(run.model, dtype=getattr(torch, run.dtype))
        self.arch = get_arch(self.model, deepstack=run.deepstack)
        self.num_layers = len(self.arch.layers)
        self.suite = suite_for(self.model.config, run.model, run.data)
        assert self.suite is not None, "validate(report=True) refuses a VLM on data no suite scores"
        self.heal_config = run.heal or default_heal(run.model, run.seed)
        self.calib = sources.load_samples(run.data, "calib", run.calib_samples, seed=run.seed, images_anywhere=run.images_anywhere)
        self.train = sources.load_samples(run.data, "train", train_sample_count(run), seed=run.seed, images_anywhere=run.images_anywhere)
        # Every K a probe may ask for (a block method needs s_K for each), not just the default windows.
        ratios = [ratio_for(k, self.num_layers) for k in range(1, self.num_layers - 1)]
        self.scores = calibrate(
            self.model, self.processor, self.calib, [run.method], ratios, self.num_layers, progress=False,
            batch_size=run.calib_batch_size, with_answers=run.calib_with_answers,
        )  # fmt: skip
        self._dense: dict[str, float] = {}
        self._plans: dict[int, Any] = {}

    def plan(self, k: int) -> Any:
        from interlace.stages import select

        ratio = ratio_for(k, self.num_layers)
        if k not in self._plans:
            self._plans[k] = select(
                self.method, self.scores, ratio, self.arch, model=self.model, processor=self.processor, calib=self.calib,
                seed=self.seed, use_final_state=self.run.use_final_state, protect=self.run.protect,
                train=self.train, heal_config=self.heal_config,  # the plan chooser (auto) heals briefly
            )
        return self._plans[k]

    def max_feasible(self) -> int:
        """The largest K the method's rules can select (greedy triplets may run out before L/2)."""
        from interlace.methods import SelectionError

        for k in range((self.num_layers - 1) // 2, 0, -1):
            try:
                self.plan(k)
                return k
            except SelectionError:
                continue
        raise ValueError(f"{self.method} cannot drop any of {self.num_layers} layers")

    def flop_bound(self, k: int) -> float:
        """Prefill FLOPs of the dense model over those of the model cut by the k-layer plan."""
        import copy

        from interlace.arch import cut_config
        from interlace.speed.bench import BenchSettings, build_inputs
        from interlace.speed.flops import forward_flops

        settings = BenchSettings()
        _, counts = build_inputs(self.model.config, self.processor, settings)
        pruned = copy.deepcopy(self.model.config)
        cut_config(pruned, self.plan(k).kept)
        return forward_flops(self.model.config, counts, settings.new_tokens)[0] / forward_flops(pruned, counts, settings.new_tokens)[0]

    def result(self, model: Any, n: int | None, split: str, key: str | None = None) -> dict:
        """The suite's result on ``split``; the dense model's is computed once per split."""
        if key and key in self._dense:
            return self._dense[key]
        value = self.suite.evaluate(model, self.processor, n, split=split, progress=False)
        if key:
            self._dense[key] = value
        return value

    def probe(self, k: int, n: int | None, split: str, bench: bool = False) -> Probe:
        from interlace.speed.bench import quick_speedup
        from interlace.stages import pruned_copy

        ratio = ratio_for(k, self.num_layers)
        plan = self.plan(k)
        train = self.train if self.run.do_heal else None
        pruned = pruned_copy(self.model, self.processor, plan, train, self.heal_config, self.calib, self.run.deepstack)
        dense = self.result(self.model, n, split, key=split)
        result = self.result(pruned, n, split)
        retention = self.suite.retention(dense, result)
        probe = Probe(ratio, k, retention, round(result["overall"], 4), None, round(self.flop_bound(k), 4), plan.dropped)
        if bench:
            probe.speedup = quick_speedup(self.model, pruned, self.processor)
        name = "test" if split == "test" else "validation"
        self.log(f"  ratio {ratio} ({k} layers): {name} retention {format_retention(probe.retention)}, FLOP bound {probe.flop_bound:.3f}x")
        return probe


def sweep(session: Session, ratios: list[float], bench: bool = True) -> dict:
    """Probe each ratio on the held-out test split (``run.eval_samples_per_task`` items per task);
    write sweep.json, retention.png and speedup.png under ``run.out``.

    Raises:
        ConfigError: a ratio out of (0, 1), or one whose K drops the method cannot fit in this
            model beside its protected layers (checked before any probe runs).
    """
    from interlace.config.validation import method_problems, protect_problems
    from interlace.methods import drop_budget

    run = session.run
    problems = method_problems([session.method], ratios, session.num_layers, "--ratios value")
    problems += protect_problems(run.protect, [session.method], ratios, session.num_layers)
    if problems:
        raise ConfigError("; ".join(dict.fromkeys(problems)))
    ks = sorted({drop_budget(r, session.num_layers) for r in ratios})
    probes = [session.probe(k, run.eval_samples_per_task, "test", bench=bench) for k in ks if k > 0]
    report = {
        "num_layers": session.num_layers, "method": session.method, "suite": session.suite.name,
        "probes": [p.__dict__ for p in probes],
    }  # fmt: skip
    out = Path(run.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep.json").write_text(json.dumps(report, indent=2) + "\n")
    _plot(probes, "retention", "retention (pruned / dense)", out / "retention.png")
    _plot(probes, "speedup" if bench else "flop_bound", "prefill speedup vs dense" if bench else "prefill FLOP bound", out / "speedup.png")
    return report


def search_ratio(
    session: Session, target_retention: float | None = None, target_speedup: float | None = None, n_per_task: int = 50
) -> tuple[float, list[Probe]]:
    """The ratio to prune at for a retention or speedup target.

    Retention: binary search over K (retention falls with K) for the largest K whose healed model
    keeps ``target_retention`` on the calibration questions. Speedup: the smallest K whose
    FLOP-bound prefill speedup reaches ``target_speedup`` (measured speedups track the bound on
    LM-dominated models; see docs/benchmarks.md).

    Raises:
        ValueError: no ratio meets the target.
    """
    if (target_retention is None) == (target_speedup is None):
        raise ValueError("give exactly one of --target-retention and --target-speedup")
    k_max = session.max_feasible()
    if target_speedup is not None:
        for k in range(1, k_max + 1):
            if session.flop_bound(k) >= target_speedup:
                return ratio_for(k, session.num_layers), []
        raise ValueError(f"--target-speedup {target_speedup}: even {k_max} of {session.num_layers} layers give only {session.flop_bound(k_max):.3f}x")
    low, high, best, probes = 1, k_max, None, []
    while low <= high:
        k = (low + high) // 2
        probe = session.probe(k, n_per_task, "calib")
        probes.append(probe)
        if probe.retention is not None and probe.retention >= target_retention:
            best, low = k, k + 1
        else:
            high = k - 1
    if best is None:
        kept = format_retention(probes[-1].retention)
        raise ValueError(f"--target-retention {target_retention}: even 1 of {session.num_layers} layers removed keeps only {kept}")
    return ratio_for(best, session.num_layers), probes


def _plot(probes: list[Probe], key: str, label: str, path: Path) -> None:
    from interlace.plots import plot_line

    plot_line([p.ratio for p in probes], [getattr(p, key) for p in probes], path, "ratio of decoder layers removed", label, marker="o-")
