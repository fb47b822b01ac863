"""`interlace compare`: every method on the same model, calibration data, healing data and budget.

Dense and Dense-FT (the same healing budget spent on all decoder layers of the unpruned model)
are the references, as in the paper's main table (SPEC section 3). Each entry of ``--methods`` is
a registered method, optionally with "-ft" to add the healing budget to a training-free baseline;
INTERLACE and the paper's ablations heal by definition. Retention is overall accuracy relative to
dense (and to Dense-FT); speedup is the measured prefill latency ratio against the dense model.

Each finished row (dense, Dense-FT, every method) is saved in ``<out>/rows`` as it ends, with the
options it was run under, so ``resume`` goes on from an interrupted comparison: on real models a
comparison is hours on a CPU, and a resumed one gives the same rows as one run straight through.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from interlace.heal import HealConfig
from interlace.suites import format_retention, retention

ALL = (
    "interlace", "interlace-oa", "interlace-tn", "consecutive", "consecutive-sk", "random",
    "shortgpt", "shortgpt-ft", "angular", "angular-ft", "reverse", "reverse-ft", "deepest-block", "deepest-block-ft",
    "sleb", "sleb-ft", "magnitude-2:4", "wanda-2:4",
)
ROWS = "rows"  # <out>/rows: one JSON per finished row, and the options they were run under


@dataclass
class CompareConfig:
    model: str | None = None
    out: Path = Path("runs/compare")
    ratio: float = 0.25
    methods: tuple[str, ...] = ALL
    data: str | None = None  # None: the model's default data (interlace.suites.default_data)
    calib_samples: int = 384
    train_samples: int | None = None
    heal: HealConfig | None = None
    eval_samples_per_task: int | None = None
    seed: int = 0
    bench: bool = True
    dtype: str = "float32"
    protect: str = ""
    resume: bool = False


class CompareResumeError(ValueError):
    """``resume`` found rows run under other options (or none at all)."""


def _options(config: CompareConfig, heal_config: HealConfig) -> dict[str, Any]:
    """What a saved row depends on: every option but the output place, the method list and resume."""
    data = {k: v for k, v in asdict(config).items() if k not in ("out", "methods", "resume", "heal")}
    return json.loads(json.dumps({**data, "heal": asdict(heal_config)}, default=str))


def _row_path(rows: Path, name: str) -> Path:
    return rows / f"{name.replace(':', '_')}.json"  # "magnitude-2:4" is not a portable file name


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
    retention: float | None  # None: undefined (a reference accuracy of 0; interlace.suites.retention)
    retention_vs_dense_ft: float | None
    perplexity: float | None
    layers_removed: int
    healed: bool
    speedup: float | None
    dropped: list[int] = field(default_factory=list)
    finetuned: list[int] = field(default_factory=list)
    wall_seconds: float = 0.0


def compare(config: CompareConfig, log=print) -> dict[str, Any]:
    """Run dense, Dense-FT and every method; write table, chart and JSON under ``config.out``.

    Every finished row is saved under ``<out>/rows``; with ``config.resume`` the rows saved there
    (under the same options) are taken as done and only the others run.

    Raises:
        ConfigError: bad input, all problems at once, checked before any weights load (the checks
            ``interlace compare`` runs, so the Python API refuses what the CLI refuses).
        CompareResumeError: ``resume`` without saved rows, or with rows saved under other options.
    """
    config = _checked(config)
    import torch

    from interlace.analyze import load_scores, plot_scores, save_scores
    from interlace.arch import get_arch
    from interlace.config import default_heal, train_sample_count
    from interlace.data import sources
    from interlace.files import write_atomic
    from interlace.heal import heal
    from interlace.loading import load_model
    from interlace.methods import Plan, get_method
    from interlace.stages import calibrate, pruned_copy, select
    from interlace.suites import suite_for

    heal_config = config.heal or default_heal(config.model, config.seed)
    out = Path(config.out)
    rows = out / ROWS
    options = _options(config, heal_config)
    done = _saved_rows(rows, options) if config.resume else {}
    if not config.resume:
        shutil.rmtree(rows, ignore_errors=True)  # a fresh comparison never mixes in older rows
    rows.mkdir(parents=True, exist_ok=True)
    write_atomic(rows / "options.json", json.dumps(options, indent=2))

    def finished(name: str, row: dict) -> dict:
        write_atomic(_row_path(rows, name), json.dumps(row, indent=2))
        return row

    if done:
        log(f"resuming: {len(done)} finished rows in {rows} ({', '.join(done)})")
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

    if "dense" in done:
        dense = done["dense"]["result"]
    else:
        log("evaluating dense")
        dense = finished("dense", {"result": evaluate(dense_model, "dense")})["result"]
    log(f"dense: {suite.headline(dense)}")
    if (rows / "scores.json").is_file() and config.resume:
        scores = load_scores(rows / "scores.json")
    else:
        scores = calibrate(dense_model, processor, calib, config.methods, [config.ratio], num_layers)
        save_scores(scores, rows / "scores.json")
    plot_scores(scores, out / "scores.png", title=f"{config.model or 'embedded'}: layer redundancy")

    if "dense-ft" in done:
        dense_ft = done["dense-ft"]["result"]
    else:
        log("dense-FT: the same healing budget on every decoder layer")
        reference = copy.deepcopy(dense_model)
        heal(reference, processor, train, list(range(num_layers)), heal_config)
        dense_ft = finished("dense-ft", {"result": evaluate(reference, "dense-FT")})["result"]
        del reference
    log(f"dense-FT: {suite.headline(dense_ft)}")

    # SLEB's plan is expensive: sleb and sleb-ft share it, also across a resume
    plans: dict[str, Any] = {name.removesuffix("-ft"): Plan.from_json(row["plan"]) for name, row in done.items() if "plan" in row}
    speedups: dict[int, float | None] = {0: 1.0}
    entries: dict[str, Entry] = {}
    for name in config.methods:
        if name in done:
            entries[name] = Entry(**done[name]["entry"])
            if get_method(name.removesuffix("-ft")).kind != "sparsity":  # timings are per depth
                speedups.setdefault(entries[name].layers_removed, entries[name].speedup)
            log(f"{name}: saved row ({suite.headline(done[name]['result'])})")
            continue
        started = time.perf_counter()
        base = name.removesuffix("-ft")
        method = get_method(base)
        healed = name.endswith("-ft") or method.heals_by_definition
        log(f"{name}: selecting")
        if base not in plans:
            plans[base] = select(
                base, scores, config.ratio, arch, model=dense_model, processor=processor, calib=calib, seed=config.seed,
                protect=config.protect, train=train, heal_config=heal_config,
            )
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
        finished(name, {"entry": asdict(entries[name]), "result": result, "plan": plan.to_json()})
        log(f"{name}: {suite.headline(result)} (retention {format_retention(entries[name].retention)}, dropped {plan.dropped})")
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


def saved_row_count(out: Path) -> int:
    """How many finished rows a comparison has saved under ``out`` (for the interruption message)."""
    return sum(1 for path in (Path(out) / ROWS).glob("*.json") if path.name not in ("options.json", "scores.json"))


def _checked(config: CompareConfig) -> CompareConfig:
    """``config`` with its data resolved from the model when None, after the checks ``validate``
    runs for `prune` (``config.input_problems``), the data spec, and the rows directory.

    Raises:
        ConfigError: every problem found, on one line.
    """
    from interlace.config import ConfigError, input_problems
    from interlace.data.sources import parse_data_spec
    from interlace.suites import default_data

    if not isinstance(config, CompareConfig):
        raise TypeError(f"config must be a CompareConfig (interlace.compare), got {type(config).__name__}")
    if config.data is None:
        config = dataclasses.replace(config, data=default_data(config.model))
    problems = input_problems(
        config.model, config.methods, [config.ratio], config.calib_samples, config.train_samples,
        config.eval_samples_per_task, Path(config.out), protect=config.protect, seed=config.seed, data=config.data,
    )  # fmt: skip
    try:
        parse_data_spec(config.data)
    except ValueError as error:
        problems.append(str(error))
    rows = Path(config.out) / ROWS
    # A fresh comparison deletes <out>/rows: only when an earlier comparison wrote it.
    if not config.resume and rows.is_dir() and any(rows.iterdir()) and not (rows / "options.json").is_file():
        problems.append(f"--out {config.out}: {rows} holds files interlace compare did not write; pass another --out")
    if problems:
        raise ConfigError("; ".join(problems))
    return config


def _saved_rows(rows: Path, options: dict[str, Any]) -> dict[str, dict]:
    """The rows saved in ``rows`` by a comparison under the same ``options``, by name.

    Raises:
        CompareResumeError: nothing saved there, or saved under other options (named, with the fix).
    """
    saved = rows / "options.json"
    if not saved.is_file():
        raise CompareResumeError(f"--resume found no saved rows in {rows}; drop --resume to start the comparison")
    before = json.loads(saved.read_text())
    changed = [f"{k} {before.get(k)!r} -> {v!r}" for k, v in options.items() if before.get(k) != v]
    if changed:
        raise CompareResumeError(
            f"--resume: the rows in {rows} were run under other options ({'; '.join(changed)}); "
            "rerun with those options, or drop --resume to start over"
        )
    found = {}
    for path in sorted(rows.glob("*.json")):
        if path.name not in ("options.json", "scores.json"):
            row = json.loads(path.read_text())
            found[row["entry"]["method"] if "entry" in row else path.stem] = row
    return found


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
        return format_retention(retention(a["perplexity"], b["perplexity"], True) if text else retention(a["overall"], b["overall"]))

    header = ["method", "removed", "healed", *tasks, "overall", *ppl, "rel. dense", "rel. dense-FT", "prefill speedup"]
    rows = [
        ["dense", "-", "no", *cells(report["dense"]), "1.000", ratio(report["dense_ft"], report["dense"]), "1.00x"],
        ["dense-FT", "-", "yes", *cells(report["dense_ft"]), ratio(report["dense"], report["dense_ft"]), "1.000", "1.00x"],
    ]
    for name, entry in report["methods"].items():
        removed = f"{entry['layers_removed']} layers {entry['dropped']}" if entry["layers_removed"] else "50% of weights (2:4)"
        speed = f"{entry['speedup']:.2f}x" if entry["speedup"] else "-"
        retentions = [format_retention(entry["retention"]), format_retention(entry["retention_vs_dense_ft"])]
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
        dense_vs_ft = retention(report["dense_ft"]["perplexity"], report["dense"]["perplexity"], lower_is_better=True)
    else:
        dense_vs_ft = retention(report["dense_ft"]["overall"], report["dense"]["overall"])
    # An undefined retention (Dense-FT accuracy 0) gets an empty bar labelled n/a.
    values = [dense_vs_ft] + [e["retention_vs_dense_ft"] for e in report["methods"].values()]
    from interlace.methods import get_method

    family = {n: get_method(n.removesuffix("-ft")).family for n in report["methods"]}
    colours = ["#7f7f7f"] + ["#2ca02c" if family[n] == "interlace" else "#1f77b4" if report["methods"][n]["healed"] else "#ff7f0e" for n in report["methods"]]
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(names)), 3.6))
    bars = ax.bar(names, [0 if v is None else 100 * v for v in values], color=colours)
    for bar, value in zip(bars, values):
        label = "n/a" if value is None else f"{100 * value:.0f}"
        ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height() + 1, label, ha="center", fontsize=7)
    ax.set_ylabel("Dense-FT ppl / ppl (%)" if report.get("suite") == "text" else "% of Dense-FT accuracy")
    ax.set_title(f"{report['model']}: {int(100 * report['ratio'])}% of layers removed")
    ax.tick_params(axis="x", rotation=45, labelsize=8)
    ax.set_ylim(0, 115)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
