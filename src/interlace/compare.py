"""`interlace compare`: every method on the same model, calibration data, healing data and budget.

Dense and Dense-FT (the same healing budget spent on all decoder layers of the unpruned model)
are the references, as in the paper's main table (SPEC section 3). Each entry of ``--methods`` is
a registered method, optionally with "-ft" to add the healing budget to a training-free baseline;
INTERLACE and the paper's ablations heal by definition. Retention is overall accuracy relative to
dense (and to Dense-FT); speedup is the measured prefill latency ratio against the dense model.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from interlace.heal import HealConfig

ALL = (
    "interlace", "interlace-oa", "interlace-tn", "consecutive", "consecutive-sk", "random",
    "shortgpt", "shortgpt-ft", "angular", "angular-ft", "sleb", "sleb-ft",
    "magnitude-2:4", "wanda-2:4",
)


@dataclass
class CompareConfig:
    model: str | None = None
    out: Path = Path("runs/compare")
    ratio: float = 0.25
    methods: tuple[str, ...] = ALL
    data: str = "embedded"
    calib_samples: int = 384
    train_samples: int | None = None
    heal: HealConfig | None = None
    eval_samples_per_task: int | None = None
    seed: int = 0
    bench: bool = True
    dtype: str = "float32"


def parse_methods(text: str) -> tuple[str, ...]:
    """'all' or a comma list of registered names, each optionally with '-ft'."""
    from interlace.methods import METHODS

    if text.strip() == "all":
        return ALL
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    bad = [n for n in names if n.removesuffix("-ft") not in METHODS]
    if not names or bad:
        raise ValueError(f"--methods: unknown {', '.join(bad) or '(empty)'}; use 'all' or names from `interlace methods`, optionally with -ft")
    return names


@dataclass
class Entry:
    method: str
    overall: float
    tasks: dict[str, float]
    retention: float
    retention_vs_dense_ft: float
    perplexity: float | None
    layers_removed: int
    healed: bool
    speedup: float | None
    dropped: list[int] = field(default_factory=list)
    finetuned: list[int] = field(default_factory=list)
    wall_seconds: float = 0.0


def compare(config: CompareConfig, log=print) -> dict[str, Any]:
    """Run dense, Dense-FT and every method; write table, chart and JSON under ``config.out``."""
    import torch

    from interlace.analyze import plot_scores
    from interlace.arch import get_arch
    from interlace.config import default_heal, train_sample_count
    from interlace.data import sources
    from interlace.heal import heal
    from interlace.loading import load_model
    from interlace.methods import get_method
    from interlace.stages import calibrate, pruned_copy, select
    from interlace.suites import suite_for

    heal_config = config.heal or default_heal(config.model, config.seed)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    dense_model, processor = load_model(config.model, dtype=getattr(torch, config.dtype))
    arch = get_arch(dense_model)
    num_layers = len(arch.layers)
    suite = suite_for(dense_model.config, config.model, config.data)
    if suite is None:
        raise ValueError(f"compare needs a held-out suite: {config.model} is a VLM, so use the embedded data, or lmms-eval on each checkpoint")
    n = config.eval_samples_per_task

    def evaluate(model: Any, description: str) -> dict:
        return suite.evaluate(model, processor, n, description=description)

    calib = sources.load_samples(config.data, "calib", config.calib_samples, seed=config.seed)
    train = sources.load_samples(config.data, "train", train_sample_count(config), seed=config.seed)

    log("evaluating dense")
    dense = evaluate(dense_model, "dense")
    log(f"dense: {suite.headline(dense)}")
    scores = calibrate(dense_model, processor, calib, config.methods, [config.ratio], num_layers)
    plot_scores(scores, out / "scores.png", title=f"{config.model or 'embedded'}: layer redundancy")

    log("dense-FT: the same healing budget on every decoder layer")
    reference = copy.deepcopy(dense_model)
    heal(reference, processor, train, list(range(num_layers)), heal_config)
    dense_ft = evaluate(reference, "dense-FT")
    log(f"dense-FT: {suite.headline(dense_ft)}")
    del reference

    plans: dict[str, Any] = {}
    speedups: dict[int, float | None] = {0: 1.0}
    entries: dict[str, Entry] = {}
    for name in config.methods:
        started = time.perf_counter()
        base = name.removesuffix("-ft")
        method = get_method(base)
        healed = name.endswith("-ft") or method.heals_by_definition
        log(f"{name}: selecting")
        if base not in plans:  # SLEB's plan is expensive: share it between sleb and sleb-ft
            plans[base] = select(base, scores, config.ratio, arch, model=dense_model, processor=processor, calib=calib, seed=config.seed)
        plan = plans[base]
        if healed and plan.finetuned:
            log(f"{name}: healing layers {plan.finetuned}")
        model = pruned_copy(dense_model, processor, plan, train if healed else None, heal_config, calib)
        result = evaluate(model, name)
        removed = len(plan.dropped)
        # one timing per depth; each sparsity method is timed itself (its depth is the dense one)
        key = -1 if method.kind == "sparsity" else removed
        if key not in speedups or key == -1:
            speedups[key] = _speedup(dense_model, model, processor, config.bench)
        entries[name] = Entry(
            method=name,
            overall=result["overall"],
            tasks=result["tasks"],
            retention=suite.retention(dense, result),
            retention_vs_dense_ft=suite.retention(dense_ft, result),
            perplexity=result.get("perplexity"),
            layers_removed=removed,
            healed=healed and method.kind != "sparsity",
            speedup=speedups[key],
            dropped=plan.dropped,
            finetuned=plan.finetuned if healed else [],
            wall_seconds=round(time.perf_counter() - started, 1),
        )
        log(f"{name}: {suite.headline(result)} (retention {entries[name].retention:.3f}, dropped {plan.dropped})")
        del model

    report = {
        "model": config.model or "embedded",
        "ratio": config.ratio,
        "num_layers": num_layers,
        "suite": suite.name,
        "metric": suite.metric,
        "dense": dense,
        "dense_ft": dense_ft,
        "methods": {name: asdict(entry) for name, entry in entries.items()},
        "heal": asdict(heal_config),
    }
    (out / "compare.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "compare.md").write_text(markdown_table(report))
    plot_comparison(report, out / "compare.png")
    return report


def _speedup(dense: Any, pruned: Any, processor: Any, enabled: bool) -> float | None:
    if not enabled:
        return None
    from interlace.bench import benchmark

    comparison = benchmark(dense, pruned, processor=processor, fast=True)
    return round(comparison.prefill_speedup, 3)


def markdown_table(report: dict) -> str:
    """The comparison as a markdown table like the paper's main table."""
    tasks = sorted(report["dense"]["tasks"])
    text = report.get("suite") == "text"  # retention is dense ppl / pruned ppl (interlace.suites)
    ppl = ["perplexity"] if text else []

    def cells(result: dict) -> list[str]:
        return [*(f"{result['tasks'][t]:.3f}" for t in tasks), f"{result['overall']:.3f}", *([f"{result['perplexity']:.2f}"] if text else [])]

    def ratio(a: dict, b: dict) -> str:  # retention of b against a
        return f"{(a['perplexity'] / b['perplexity']) if text else (b['overall'] / a['overall']):.3f}"

    header = ["method", "removed", "healed", *tasks, "overall", *ppl, "rel. dense", "rel. dense-FT", "prefill speedup"]
    rows = [
        ["dense", "-", "no", *cells(report["dense"]), "1.000", ratio(report["dense_ft"], report["dense"]), "1.00x"],
        ["dense-FT", "-", "yes", *cells(report["dense_ft"]), ratio(report["dense"], report["dense_ft"]), "1.000", "1.00x"],
    ]
    for name, entry in report["methods"].items():
        removed = f"{entry['layers_removed']} layers {entry['dropped']}" if entry["layers_removed"] else "50% of weights (2:4)"
        speed = f"{entry['speedup']:.2f}x" if entry["speedup"] else "-"
        retentions = [f"{entry['retention']:.3f}", f"{entry['retention_vs_dense_ft']:.3f}"]
        rows.append([name, removed, "yes" if entry["healed"] else "no", *cells(entry), *retentions, speed])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    title = f"{report['model']}: {report['num_layers']} decoder layers, ratio {report['ratio']}\n\n"
    return title + "\n".join(lines) + "\n"


def plot_comparison(report: dict, path: Path) -> None:
    """Bar chart of retention vs Dense-FT per method (the paper's Figure 1 in spirit)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["dense", *report["methods"]]
    if report.get("suite") == "text":
        dense_vs_ft = report["dense_ft"]["perplexity"] / report["dense"]["perplexity"]
    else:
        dense_vs_ft = report["dense"]["overall"] / report["dense_ft"]["overall"]
    values = [dense_vs_ft] + [e["retention_vs_dense_ft"] for e in report["methods"].values()]
    from interlace.methods import get_method

    family = {n: get_method(n.removesuffix("-ft")).family for n in report["methods"]}
    colours = ["#7f7f7f"] + ["#2ca02c" if family[n] == "interlace" else "#1f77b4" if report["methods"][n]["healed"] else "#ff7f0e" for n in report["methods"]]
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(names)), 3.6))
    bars = ax.bar(names, [100 * v for v in values], color=colours)
    for bar, value in zip(bars, values):
        ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height() + 1, f"{100 * value:.0f}", ha="center", fontsize=7)
    ax.set_ylabel("Dense-FT ppl / ppl (%)" if report.get("suite") == "text" else "% of Dense-FT accuracy")
    ax.set_title(f"{report['model']}: {int(100 * report['ratio'])}% of layers removed")
    ax.tick_params(axis="x", rotation=45, labelsize=8)
    ax.set_ylim(0, 115)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
