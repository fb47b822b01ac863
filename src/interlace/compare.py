"""`interlace compare`: every method on the same model, calibration data, healing data and budget.

Dense and Dense-FT (the same healing budget spent on all decoder layers of the unpruned model)
are the references, as in the paper's main table (arXiv 2511.19676, its Qwen3-VL-8B results). Each entry of ``--methods`` is
a registered method, optionally with "-ft" to add the healing budget to a training-free baseline;
INTERLACE and the paper's ablations heal by definition. Retention is overall accuracy relative to
dense (and to Dense-FT); speedup is the measured prefill latency ratio against the dense model.

Each finished row (dense, Dense-FT, every method) is saved in ``<out>/rows`` as it ends, with the
options it was run under, so ``resume`` goes on from an interrupted comparison: on real models a
comparison is hours on a CPU, and a resumed one gives the same rows as one run straight through.

The run every row shares is a ``PruneConfig``, as `interlace prune` takes it, validated as prune's
is (``interlace.config.validate``); ``CompareConfig`` adds the methods and the speed measurement.
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

from interlace.config.options import DEFAULT_METHOD, HealConfig, PruneConfig
from interlace.evaluation.suites import SUITES, format_retention
from interlace.methods import METHODS, Plan, get_method


def all_methods() -> tuple[str, ...]:
    """Every registered method in the order of the paper's main table: the methods that heal by
    definition (INTERLACE, its ablations), each training-free baseline beside its -FT variant, the
    2:4 sparsity methods (they remove no layer: nothing to heal), and last the plan chooser, which
    reuses the row of the plan it chooses (``_MethodRows.run``)."""
    names = []
    for method in sorted(METHODS.values(), key=lambda m: (m.family == "chooser", m.kind == "sparsity", not m.heals_by_definition)):
        plain = method.heals_by_definition or method.kind == "sparsity"
        names += [method.name] if plain else [method.name, f"{method.name}-ft"]
    return tuple(names)


ALL = all_methods()
ROWS = "rows"  # <out>/rows: one JSON per finished row, and the options they were run under
# PruneConfig fields that no row depends on: where the report goes, going on from its rows, and
# what prune alone does (compare always heals Dense-FT and the -ft rows, and evaluates every row).
NOT_OPTIONS = ("out", "resume", "method", "heal", "do_heal", "evaluate", "overwrite", "push_to_hub")


@dataclass
class CompareConfig:
    """What `interlace compare` runs: every method on one run's model, data and budget.

    Attributes:
        run: the run every row shares, as `interlace prune` takes it (model, data, ratio, sample
            counts, heal, seed, dtype, protect, deepstack, calibration options); its ``out`` is
            the report directory, and ``resume`` goes on from the rows saved there. Its
            ``method`` gives way to ``methods``; ``do_heal``, ``evaluate``, ``overwrite`` and
            ``push_to_hub`` are prune's alone.
        methods: registered names, each optionally with "-ft" (``parse_methods``); default ``ALL``.
        bench: measure the prefill speedup of each depth (``speed.bench.quick_speedup``).
    """

    run: PruneConfig = field(default_factory=lambda: PruneConfig(out=Path("runs/compare")))
    methods: tuple[str, ...] = ALL
    bench: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.run, PruneConfig):
            raise TypeError(f"run must be a PruneConfig (interlace.config), got {type(self.run).__name__}")
        if isinstance(self.methods, str) or not all(isinstance(m, str) for m in self.methods):
            raise TypeError(f"methods must be a tuple of method names (parse_methods('a,b') makes one), got {self.methods!r}")
        self.methods = tuple(self.methods)


class CompareResumeError(ValueError):
    """``resume`` found rows run under other options (or none at all)."""


def _options(config: CompareConfig, heal_config: HealConfig) -> dict[str, Any]:
    """What a saved row depends on: the run's options (not ``NOT_OPTIONS``), its healing and bench."""
    run = {k: v for k, v in asdict(config.run).items() if k not in NOT_OPTIONS}
    return json.loads(json.dumps({**run, "bench": config.bench, "heal": asdict(heal_config)}, default=str))


def _row_path(rows: Path, name: str) -> Path:
    return rows / f"{name.replace(':', '_')}.json"  # "magnitude-2:4" is not a portable file name


def parse_methods(text: str) -> tuple[str, ...]:
    """'all' or a comma list of registered names, each optionally with '-ft'."""
    if text.strip() == "all":
        return ALL
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    bad = [n for n in names if n.removesuffix("-ft") not in METHODS]
    if not names or bad:
        raise ValueError(f"--methods: unknown {', '.join(bad) or '(empty)'}; use 'all' or names from `interlace methods`, optionally with -ft")
    for name in names:
        method = METHODS[name.removesuffix("-ft")]
        if name.endswith("-ft") and (method.heals_by_definition or method.kind == "sparsity"):
            why = "heals by definition" if method.heals_by_definition else "removes no layer, so nothing heals"
            raise ValueError(f"--methods: {name}: -ft adds healing to a training-free layer baseline, and {method.name} {why}; use {method.name}")
    if len(set(names)) < len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"--methods: {', '.join(twice)} named twice; name each row once")
    return names


@dataclass
class Entry:
    method: str
    overall: float
    tasks: dict[str, float]
    retention: float | None  # None: undefined (a reference accuracy of 0; interlace.evaluation.suites.retention)
    retention_vs_dense_ft: float | None
    perplexity: float | None
    layers_removed: int
    healed: bool
    speedup: float | None
    dropped: list[int] = field(default_factory=list)
    finetuned: list[int] = field(default_factory=list)
    wall_seconds: float = 0.0
    chose: str | None = None  # the plan chooser's row: the candidate it chose


def compare(config: CompareConfig, log=print) -> dict[str, Any]:
    """Run dense, Dense-FT and every method; write table, chart and JSON under ``config.run.out``.

    Every finished row is saved under ``<out>/rows``; with ``config.run.resume`` the rows saved
    there (under the same options) are taken as done and only the others run.

    Raises:
        ConfigError: bad input, all problems at once, checked before any weights load (the checks
            ``interlace compare`` runs, so the Python API refuses what the CLI refuses).
        CompareResumeError: ``resume`` without saved rows, or with rows saved under other options.
    """
    config = _checked(config)
    run = config.run
    import torch

    from interlace.arch import get_arch
    from interlace.calibration import load_scores, plot_scores, save_scores
    from interlace.config.validation import default_heal, train_sample_count
    from interlace.data import sources
    from interlace.evaluation.suites import suite_for
    from interlace.files import write_atomic
    from interlace.heal.loop import heal
    from interlace.loading import load_model
    from interlace.stages import calibrate

    heal_config = run.heal or default_heal(run.model, run.seed)
    out = Path(run.out)
    rows = out / ROWS
    options = _options(config, heal_config)
    done = _saved_rows(rows, options) if run.resume else {}
    if not run.resume:
        shutil.rmtree(rows, ignore_errors=True)  # a fresh comparison never mixes in older rows
    rows.mkdir(parents=True, exist_ok=True)
    write_atomic(rows / "options.json", json.dumps(options, indent=2))

    def finished(name: str, row: dict) -> dict:
        write_atomic(_row_path(rows, name), json.dumps(row, indent=2))
        return row

    if done:
        log(f"resuming: {len(done)} finished rows in {rows} ({', '.join(done)})")
    dense_model, processor = load_model(run.model, dtype=getattr(torch, run.dtype))
    arch = get_arch(dense_model, deepstack=run.deepstack)
    num_layers = len(arch.layers)
    suite = suite_for(dense_model.config, run.model, run.data)
    assert suite is not None, "validate(report=True) refuses a VLM on data no suite scores"
    n = run.eval_samples_per_task

    def evaluate(model: Any, description: str) -> dict:
        return suite.evaluate(model, processor, n, description=description)

    calib = sources.load_samples(run.data, "calib", run.calib_samples, seed=run.seed, images_anywhere=run.images_anywhere)
    train = sources.load_samples(run.data, "train", train_sample_count(run), seed=run.seed, images_anywhere=run.images_anywhere)

    if "dense" in done:
        dense = done["dense"]["result"]
    else:
        log("evaluating dense")
        dense = finished("dense", {"result": evaluate(dense_model, "dense")})["result"]
    log(f"dense: {suite.headline(dense)}")
    if (rows / "scores.json").is_file() and run.resume:
        scores = load_scores(rows / "scores.json")
    else:
        scores = calibrate(
            dense_model, processor, calib, config.methods, [run.ratio], num_layers,
            batch_size=run.calib_batch_size, with_answers=run.calib_with_answers,
        )  # fmt: skip
        save_scores(scores, rows / "scores.json")
    plot_scores(scores, out / "scores.png", title=f"{run.model or 'embedded'}: layer redundancy")

    if "dense-ft" in done:
        dense_ft = done["dense-ft"]["result"]
    else:
        log("dense-FT: the same healing budget on every decoder layer")
        reference = copy.deepcopy(dense_model)
        heal(reference, processor, train, list(range(num_layers)), heal_config)
        dense_ft = finished("dense-ft", {"result": evaluate(reference, "dense-FT")})["result"]
        del reference
    log(f"dense-FT: {suite.headline(dense_ft)}")

    plans = {name.removesuffix("-ft"): Plan.from_json(row["plan"]) for name, row in done.items() if "plan" in row}
    rows_of = _MethodRows(config, heal_config, dense_model, processor, arch, scores, calib, train, suite, dense, dense_ft, log, plans)
    entries: dict[str, Entry] = {}
    for name in config.methods:
        if name in done:
            entries[name] = rows_of.saved(name, done[name])
            continue
        entry, result, plan = rows_of.run(name)
        entries[name] = entry
        finished(name, {"entry": asdict(entry), "result": result, "plan": plan.to_json()})
        log(f"{name}: {suite.headline(result)} (retention {format_retention(entry.retention)}, dropped {plan.dropped})")

    report = {
        "model": run.model or "embedded",
        "ratio": run.ratio,
        "num_layers": num_layers,
        "suite": suite.name,
        "metric": suite.metric,
        "dense": dense,
        "dense_ft": dense_ft,
        # prune's default heads the table, then the chooser (it runs last, to reuse the row it chooses)
        "methods": {name: asdict(entries[name]) for name in sorted(entries, key=lambda n: (n != DEFAULT_METHOD, entries[n].chose is None))},
        "heal": asdict(heal_config),
    }
    (out / "compare.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "compare.md").write_text(markdown_table(report))
    plot_comparison(report, out / "compare.png")
    return report


@dataclass
class _MethodRows:
    """The methods' rows of one comparison: each selects its plan (a method and its -ft row share
    it, also across a resume: SLEB's is expensive), cuts a copy of the dense model, heals it when
    the row heals, evaluates it, and is timed once per depth (each sparsity method on its own)."""

    config: CompareConfig
    heal_config: HealConfig
    dense_model: Any
    processor: Any
    arch: Any
    scores: Any
    calib: list
    train: list
    suite: Any
    dense: dict
    dense_ft: dict
    log: Any
    plans: dict[str, Any] = field(default_factory=dict)
    speedups: dict[int, float | None] = field(default_factory=lambda: {0: 1.0})
    healed: dict[tuple, tuple[str, dict]] = field(default_factory=dict)  # a healed row's plan -> (row, result)

    def saved(self, name: str, row: dict) -> Entry:
        """A row saved before a resume; its plan, result and timing serve the rows still to run."""
        entry = Entry(**row["entry"])
        if get_method(name.removesuffix("-ft")).kind != "sparsity":  # timings are per depth
            self.speedups.setdefault(entry.layers_removed, entry.speedup)
        if entry.healed:
            self.healed.setdefault(_healing_key(Plan.from_json(row["plan"])), (name, row["result"]))
        self.log(f"{name}: saved row ({self.suite.headline(row['result'])})")
        return entry

    def run(self, name: str) -> tuple[Entry, dict, Plan]:
        from interlace.speed.bench import quick_speedup
        from interlace.stages import pruned_copy, select

        started = time.perf_counter()
        run = self.config.run
        base = name.removesuffix("-ft")
        method = get_method(base)
        healed = name.endswith("-ft") or method.heals_by_definition
        self.log(f"{name}: selecting")
        if base not in self.plans:
            self.plans[base] = select(
                base, self.scores, run.ratio, self.arch, model=self.dense_model, processor=self.processor, calib=self.calib, seed=run.seed,
                use_final_state=run.use_final_state, protect=run.protect, train=self.train, heal_config=self.heal_config,
            )  # fmt: skip
        plan = self.plans[base]
        removed = len(plan.dropped)
        key = -1 if method.kind == "sparsity" else removed
        same = self.healed.get(_healing_key(plan)) if method.family == "chooser" else None
        if same:  # the chosen plan, healed the same way, is a finished row: healing is deterministic
            self.log(f"{name}: chose {plan.choice['chosen']}, the plan and healing of row {same[0]}: its result")
            result = same[1]
        else:
            if healed and plan.finetuned:
                self.log(f"{name}: healing layers {plan.finetuned}")
            model = pruned_copy(self.dense_model, self.processor, plan, self.train if healed else None, self.heal_config, self.calib, run.deepstack)
            result = self.suite.evaluate(model, self.processor, run.eval_samples_per_task, description=name)
            if key not in self.speedups or key == -1:
                self.speedups[key] = quick_speedup(self.dense_model, model, self.processor) if self.config.bench else None
            if healed and method.kind != "sparsity":
                self.healed.setdefault(_healing_key(plan), (name, result))
        entry = Entry(
            method=name,
            overall=result["overall"],
            tasks=result["tasks"],
            retention=self.suite.retention(self.dense, result),
            retention_vs_dense_ft=self.suite.retention(self.dense_ft, result),
            perplexity=result.get("perplexity"),
            layers_removed=removed,
            healed=healed and method.kind != "sparsity",
            speedup=self.speedups[key],
            dropped=plan.dropped,
            finetuned=plan.finetuned if healed else [],
            wall_seconds=round(time.perf_counter() - started, 1),
            chose=plan.choice["chosen"] if plan.choice else None,
        )
        return entry, result, plan


def _healing_key(plan: Plan) -> tuple:
    """What a healed row's result depends on besides the run's options: the cut and what heals."""
    return tuple(plan.dropped), tuple(plan.finetuned), tuple(plan.anchors)


def saved_row_count(out: Path) -> int:
    """How many finished rows a comparison has saved under ``out`` (for the interruption message)."""
    return sum(1 for path in (Path(out) / ROWS).glob("*.json") if path.name not in ("options.json", "scores.json"))


def _checked(config: CompareConfig) -> CompareConfig:
    """``config`` with its run's data resolved from the model when None, after the checks
    ``validate`` runs for `prune` (on every method, with ``--out`` a report directory) and the
    rows directory's.

    Raises:
        ConfigError: every problem found, on one line.
    """
    from interlace.config.options import ConfigError
    from interlace.config.validation import validate, with_model_defaults

    if not isinstance(config, CompareConfig):
        raise TypeError(f"config must be a CompareConfig (interlace.compare), got {type(config).__name__}")
    config = dataclasses.replace(config, run=with_model_defaults(config.run))
    problems = []
    try:
        validate(config.run, methods=config.methods, report=True)
    except ConfigError as error:
        problems.append(str(error))
    rows = Path(config.run.out) / ROWS
    # A fresh comparison deletes <out>/rows: only when an earlier comparison wrote it.
    if not config.run.resume and rows.is_dir() and any(rows.iterdir()) and not (rows / "options.json").is_file():
        problems.append(f"--out {config.run.out}: {rows} holds files interlace compare did not write; pass another --out")
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


def markdown_table(report: dict) -> str:
    """The comparison as a markdown table like the paper's main table."""
    tasks = sorted(report["dense"]["tasks"])
    suite = _suite(report)
    text = suite.metric == "perplexity"  # retention is dense ppl / pruned ppl (Suite.retention)
    ppl = ["perplexity"] if text else []

    def cells(result: dict) -> list[str]:
        return [*(f"{result['tasks'][t]:.3f}" for t in tasks), f"{result['overall']:.3f}", *([f"{result['perplexity']:.2f}"] if text else [])]

    def ratio(a: dict, b: dict) -> str:  # retention of b against a
        return format_retention(suite.retention(a, b))

    header = ["method", "removed", "healed", *tasks, "overall", *ppl, "rel. dense", "rel. dense-FT", "prefill speedup"]
    rows = [
        ["dense", "-", "no", *cells(report["dense"]), "1.000", ratio(report["dense_ft"], report["dense"]), "1.00x"],
        ["dense-FT", "-", "yes", *cells(report["dense_ft"]), ratio(report["dense"], report["dense_ft"]), "1.000", "1.00x"],
    ]
    for name, entry in report["methods"].items():
        removed = f"{entry['layers_removed']} layers {entry['dropped']}" if entry["layers_removed"] else "50% of weights (2:4)"
        speed = f"{entry['speedup']:.2f}x" if entry["speedup"] else "-"
        retentions = [format_retention(entry["retention"]), format_retention(entry["retention_vs_dense_ft"])]
        label = f"{name} (chose {entry['chose']})" if entry.get("chose") else name
        rows.append([label, removed, "yes" if entry["healed"] else "no", *cells(entry), *retentions, speed])
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
    suite = _suite(report)
    # An undefined retention (Dense-FT accuracy 0) gets an empty bar labelled n/a.
    values = [suite.retention(report["dense_ft"], report["dense"])] + [e["retention_vs_dense_ft"] for e in report["methods"].values()]
    family = {n: get_method(n.removesuffix("-ft")).family for n in report["methods"]}
    colours = ["#7f7f7f"] + ["#2ca02c" if family[n] == "interlace" else "#1f77b4" if report["methods"][n]["healed"] else "#ff7f0e" for n in report["methods"]]
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(names)), 3.6))
    bars = ax.bar(names, [0 if v is None else 100 * v for v in values], color=colours)
    for bar, value in zip(bars, values):
        label = "n/a" if value is None else f"{100 * value:.0f}"
        ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height() + 1, label, ha="center", fontsize=7)
    ax.set_ylabel("Dense-FT ppl / ppl (%)" if suite.metric == "perplexity" else "% of Dense-FT accuracy")
    ax.set_title(f"{report['model']}: {int(100 * report['ratio'])}% of layers removed")
    ax.tick_params(axis="x", rotation=45, labelsize=8)
    ax.set_ylim(0, 115)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _suite(report: dict) -> Any:
    """The suite a report was scored on, whose ``retention`` is the rule its table and chart use
    (a report written before it was named was scored on the visual-QA suite)."""
    return SUITES[report.get("suite", "vqa")]
