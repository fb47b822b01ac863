"""The `interlace` command line: a thin layer over the Python API."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
import typer.rich_utils
from rich.table import Table

from interlace.cli import bench as cli_bench
from interlace.cli import surgery as cli_surgery
from interlace.cli.flags import config_flags
from interlace.config import PruneConfig
from interlace.console import check_json_path, check_threads, console, fail, plain_width, tolerate_any_encoding
from interlace.progress import PROGRESS

# typer renders help on a console of its own, 80 columns wide without a terminal unless
# TERMINAL_WIDTH is set (typer.rich_utils.MAX_WIDTH, typer 0.x): give it the width `console` uses.
typer.rich_utils.MAX_WIDTH = typer.rich_utils.MAX_WIDTH or plain_width()

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
cli_surgery.register(app)
cli_bench.register(app)

ModelArg = Annotated[
    Optional[str], typer.Argument(help="Checkpoint directory or Hub id; omit for the embedded model.")
]
JsonOpt = Annotated[Optional[Path], typer.Option("--json", help="Also write the results as JSON here.")]
ThreadsOpt = Annotated[int, typer.Option("--threads", help="torch CPU threads (0: torch's default).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", help="Print no progress bars or progress lines, only the stages and the results.")]
EvalNOpt = Annotated[Optional[int], typer.Option(help="Items per task (default: 500 visual-QA questions; 100 cloze and 100 continuation items and 100 perplexity passages for a text model; every row of --data).")]

# The run-config flags compare and sweep share with prune (generated from PruneConfig, as prune's
# are); each command builds the same PruneConfig from them (``_run_config``).
SHARED = ("data", "calib_samples", "train_samples", "eval_samples_per_task", "seed", "protect", "dtype", "deepstack")


def _start(threads: int, quiet: bool, json_path: Path | None) -> None:
    """What every command does first: check --threads (before torch is imported: a huge thread
    count crashes the import of its pools) and set it, silence the progress on --quiet, and refuse
    an unwritable --json before any work."""
    check_threads(threads)
    if threads:
        import torch

        torch.set_num_threads(threads)
    PROGRESS.quiet = quiet
    check_json_path(json_path)


def _run_config(model: str | None, flags: dict, checks: dict, **fields) -> PruneConfig:
    """The run compare and sweep share with prune, from their generated flags merged as prune's
    are (``config.resolve_config``: healing defaults by model, every problem at once, checked as
    ``checks`` says the command validates); a flag left unset keeps the field's default."""
    from interlace.config import ConfigError, resolve_config

    given = {name: value for name, value in flags.items() if value is not None}
    try:
        return resolve_config({}, {"model": model, **given, **fields}, **checks)
    except ConfigError as error:
        fail(str(error))


def _accuracy_table(title: str, columns: dict[str, dict]) -> Table:
    table = Table(title=title, min_width=len(title))  # as wide as its title: a narrow table wraps a path in it
    table.add_column("task")
    for name in columns:
        table.add_column(name, justify="right")
    tasks = sorted({task for result in columns.values() for task in result["tasks"]})
    counts = {task: n for result in columns.values() for task, n in (result.get("counts") or {}).items()}
    for task in tasks:
        label = f"{task} (n={counts[task]})" if task in counts else task
        table.add_row(label, *(f"{result['tasks'].get(task, float('nan')):.3f}" for result in columns.values()))
    table.add_row("[bold]overall", *(f"[bold]{result['overall']:.3f}" for result in columns.values()))
    return table


@app.callback()
def main() -> None:
    """Prune whole decoder layers from vision-language models and heal the survivors (INTERLACE)."""
    tolerate_any_encoding()


def _eval_with_lmms(model, json_path, n_per_task, batch_size, threads, tasks, limit, lmms_python) -> None:
    """`interlace eval --harness lmms-eval`: run lmms-eval on a local checkpoint and print its metrics."""
    from interlace.evaluation import lmms_eval as lmms
    from interlace.loading import resolve

    try:
        source = Path(resolve(model))
        if not source.is_dir():
            fail(f"--harness lmms-eval needs a local checkpoint directory, got {model}; download it first")
        lmms_model = lmms.lmms_model_for(lmms.checkpoint_model_type(source))
    except ValueError as error:
        fail(str(error).splitlines()[0])
    python = lmms_python or lmms.default_lmms_python()
    if not lmms.has_lmms_eval(python):
        fail(f"lmms-eval is not installed in {python}; run `make lmms-setup` or pass --lmms-python")
    try:
        results = lmms.evaluate_with_lmms(
            source, (tasks or lmms.SUITE_GROUP).split(","), n_per_task=n_per_task, python=python,
            batch_size=batch_size or 1, limit=limit, echo=typer.echo,
            dtype="float32" if lmms_model.takes_dtype else None,  # as the built-in harness loads
            env={"OMP_NUM_THREADS": str(threads)} if threads else None,
        )  # fmt: skip
    except ValueError as error:
        fail(str(error).splitlines()[0])
    except lmms.LmmsEvalError as error:
        fail(f"{str(error).splitlines()[0]} (its output is above)", code=1)
    table = Table(title=f"{model or 'embedded'}: lmms-eval")
    for column in ("task", "metric", "value"):
        table.add_column(column, justify="right" if column == "value" else "left")
    for task, metrics in results.items():
        for metric, value in metrics.items():
            if "_stderr" not in metric:  # the JSON keeps them
                table.add_row(task, metric, f"{value:.4f}")
    console.print(table)
    if json_path:
        json_path.write_text(json.dumps(results, indent=2) + "\n")


@app.command("eval")
def eval_command(
    model: ModelArg = None,
    json_path: JsonOpt = None,
    n_per_task: EvalNOpt = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Prompts per generate call, or passages per perplexity forward (default: 64 visual-QA, 8 text, 1 lmms-eval).")] = None,
    data: Annotated[Optional[str], typer.Option("--data", help="Held-out rows of your own instead of the built-in data: a JSONL/Parquet/imagefolder/Hub spec as for prune (plain-text rows: perplexity + continuation and cloze; chat rows: exact match per source).")] = None,
    threads: ThreadsOpt = 0,
    quiet: QuietOpt = False,
    harness: Annotated[str, typer.Option(help="builtin: the held-out suite here; lmms-eval: run lmms-eval on a local checkpoint.")] = "builtin",
    tasks: Annotated[Optional[str], typer.Option(help="lmms-eval tasks, comma-separated (default: interlace_vqa, the held-out suite exported for lmms-eval).")] = None,
    limit: Annotated[Optional[int], typer.Option(help="lmms-eval: at most this many questions per task.")] = None,
    lmms_python: Annotated[Optional[Path], typer.Option(help="Python with lmms-eval installed (default: .venv-lmms/bin/python if it exists, else this one).")] = None,
) -> None:
    """Evaluate a model on held-out data: a VLM on the built-in visual-QA suite (greedy, exact match), a text model on
    held-out Python-docs prose (perplexity, continuation, cloze), either on rows of your own (--data), or through lmms-eval."""
    from interlace.config import eval_count_problems, eval_problems
    from interlace.data import sources
    from interlace.loading import ModelNotFoundError, is_vision_language, load_model

    _start(threads, quiet, json_path)
    if batch_size is not None and batch_size < 1:
        fail(f"--batch-size must be >= 1, got {batch_size}")
    if harness not in ("builtin", "lmms-eval"):
        fail(f"--harness must be builtin or lmms-eval, got {harness!r}")
    if harness == "lmms-eval":
        if problems := eval_count_problems(n_per_task, True, "--n-per-task"):  # its interlace_vqa is the visual-QA suite
            fail("; ".join(problems))
        _eval_with_lmms(model, json_path, n_per_task or 500, batch_size, threads, tasks, limit, lmms_python)
        return
    for flag, value in (("--tasks", tasks), ("--limit", limit), ("--lmms-python", lmms_python)):
        if value is not None:
            fail(f"{flag} applies to --harness lmms-eval only; add --harness lmms-eval or drop {flag}")
    if problems := eval_problems(model, n_per_task, data):  # a truncated or remote-code checkpoint fails here, not in the load
        fail("; ".join(problems))
    rows = None  # --data embedded or pydocs: the built-in held-out split of that data, as without --data
    if data is not None and sources.parse_data_spec(data).kind not in ("embedded", "text"):
        try:  # read before the weights load, so that bad rows fail in seconds
            rows = list(sources.iter_samples(data, "train"))  # "train" of a file: every row, in order
        except ValueError as error:  # DataSpecError included
            fail(f"--data {data}: {_one_line(error)}")
    try:
        loaded, processor = load_model(model)
    except ModelNotFoundError as error:
        fail(str(error))
    from interlace.evaluation.suites import TEXT, VQA, evaluate_rows

    name = model or "embedded"
    if rows is not None:
        try:
            result = evaluate_rows(loaded, processor, rows, n_per_task, batch_size)
        except ValueError as error:
            fail(f"--data {data}: {_one_line(error)}")
        where = f"--data {data} ({len(rows)} rows)"
    elif not is_vision_language(loaded.config):
        try:  # a tokenizer that turns every passage into fewer than two tokens leaves nothing to score
            result = TEXT.evaluate(loaded, processor, n_per_task, batch_size=batch_size)
        except ValueError as error:
            fail(f"{name}: {_one_line(error)}; check its tokenizer, or pass --data with rows it can read")
        where = "held-out Python-docs prose (pydocs test split)"
    else:
        result = VQA.evaluate(loaded, processor, n_per_task, batch_size=batch_size)
        where = "built-in held-out visual-QA suite"
    title = f"{name} on {where}"
    if result.get("perplexity") is not None:
        title += f": perplexity {result['perplexity']:.3f} over {result['tokens']:,} tokens"
    console.print(_accuracy_table(title, {"accuracy": result}))
    if json_path:
        json_path.write_text(json.dumps(result, indent=2) + "\n")


def _stage_log(message: str) -> None:
    console.print(message, highlight=False)


def _run_prune(config) -> PruneReport:  # noqa: F821
    from interlace.evaluation.verify import VerificationError
    from interlace.files import WriteError
    from interlace.heal.loop import HealInterrupted, NonFiniteLossError
    from interlace.pipeline import prune

    try:
        return prune(config, log=_stage_log)
    except (ValueError, FileExistsError) as error:
        fail(_one_line(error))
    except HealInterrupted as error:
        console.print(f"[bold yellow]interrupted:[/] {_one_line(error)}", highlight=False, soft_wrap=True)
        raise typer.Exit(130) from None
    except KeyboardInterrupt as error:  # outside healing, which saves and raises HealInterrupted
        console.print(f"[bold yellow]interrupted:[/] {_one_line(error) or 'before healing started; nothing was kept'}", highlight=False, soft_wrap=True)
        raise typer.Exit(130) from None
    except (NonFiniteLossError, VerificationError, WriteError) as error:
        fail(_one_line(error), code=1)


def _one_line(error: BaseException) -> str:
    """The first line of an error, with the notes prune() adds (what <out>.work holds) appended."""
    lines = str(error).splitlines()
    return "; ".join(([lines[0]] if lines else []) + list(getattr(error, "__notes__", ())))


def _search_ratio(config, target_retention: float | None, target_speedup: float | None) -> float:
    from interlace.heal.loop import HealInterrupted
    from interlace.sweep import Session, search_ratio

    if target_retention is not None and target_speedup is not None:
        fail("give only one of --target-retention and --target-speedup")
    if target_retention is not None and not 0 < target_retention <= 1:
        fail(f"--target-retention must be in (0, 1], got {target_retention}")
    if target_speedup is not None and target_speedup <= 1:
        fail(f"--target-speedup must be > 1, got {target_speedup}")
    from interlace.config import ConfigError, validate

    try:  # the search loads, calibrates and heals: every input is checked before it, as for prune
        validate(config)
    except ConfigError as error:
        fail(str(error))
    console.print("[bold]searching the ratio...[/]")
    try:  # the run prune will do: its model, data, method, healing, dtype and deepstack
        ratio, _ = search_ratio(Session(config, log=_stage_log), target_retention, target_speedup)
    except ValueError as error:  # ConfigError included (a VLM on data no suite scores)
        fail(str(error))
    except (KeyboardInterrupt, HealInterrupted):  # the search keeps no state and writes nothing
        console.print("[bold yellow]interrupted:[/] the ratio search stopped before prune started; nothing was written", highlight=False, soft_wrap=True)
        raise typer.Exit(130) from None
    console.print(f"  chosen ratio {ratio}")
    return ratio


def _summary_table(report) -> Table:
    """Dense against pruned, titled with what ran: the method, the cut, and what healing trained."""
    from interlace.evaluation.suites import format_retention
    from interlace.export import healed_layers

    healed = healed_layers(report.to_json())
    what = f"healed: trained layers {healed}" if healed else "not healed"
    title = f"interlace {report.plan['method']}: {report.layers_before} -> {report.layers_after} decoder layers, {what}"
    table = Table(title=title, min_width=len(title))  # a title on one line where the console is wide enough
    table.add_column("")
    table.add_column("dense", justify="right")
    table.add_column("pruned + healed" if healed else "pruned (no healing)", justify="right")
    table.add_row("decoder layers", str(report.layers_before), str(report.layers_after))
    if report.dense and report.pruned:
        text = report.suite == "text"
        counts = report.dense.get("counts") or {}
        if text:
            table.add_row("[bold]perplexity", f"[bold]{report.dense['perplexity']:.2f}", f"[bold]{report.pruned['perplexity']:.2f}")
        for task in sorted(report.dense["tasks"]):
            label = f"{task} (n={counts[task]})" if task in counts else task
            table.add_row(label, f"{report.dense['tasks'][task]:.3f}", f"{report.pruned['tasks'].get(task, float('nan')):.3f}")
        overall = "tasks (mean accuracy)" if text else "[bold]overall"
        table.add_row(overall, f"{report.dense['overall']:.3f}", f"{report.pruned['overall']:.3f}")
        label = "retention (dense ppl / pruned ppl)" if text else "retention (pruned / dense accuracy)"
        table.add_row(f"[bold]{label}", "", f"[bold]{format_retention(report.retention)}")
    for stage, seconds in report.wall_seconds.items():
        table.add_row(f"[dim]{stage} (s)", "", f"[dim]{seconds:.1f}")
    return table


def _print_answers(report) -> None:
    """A text model's dense and pruned replies to the fixed chat prompts."""
    if not report.answers or "pruned" not in report.answers:
        return
    for dense, pruned in zip(report.answers["dense"], report.answers["pruned"]):
        console.print(f"[bold]{dense['prompt']}[/]\n  dense:  {dense['answer']!r}\n  pruned: {pruned['answer']!r}", highlight=False)


def _write_report_json(path: Path | None, report) -> None:
    if path is None:
        return
    path.write_text(json.dumps(report.to_json(), indent=2) + "\n")


@app.command()
def methods() -> None:
    """List the layer-selection methods, with what the -FT variant heals and the paper."""
    from interlace.methods import METHODS

    table = Table(title="selection methods")
    for column in ("name", "what it does", "-FT heals", "paper"):
        table.add_column(column)
    for method in METHODS.values():
        table.add_row(method.name, method.description, method.heals, method.paper)
    console.print(table)


@app.command()
@config_flags(heal=None, defaults={"data": None})  # every PruneConfig and HealConfig field; data: resolved from the model
def prune(
    ctx: typer.Context,
    model: ModelArg = None,
    *,
    target_retention: Annotated[Optional[float], typer.Option(help="Pick the largest ratio whose healed model keeps this retention (validation split).")] = None,
    target_speedup: Annotated[Optional[float], typer.Option(help="Pick the smallest ratio whose FLOP-bound prefill speedup reaches this.")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", help="YAML file of options (flags override it).")] = None,
    json_path: JsonOpt = None,
    threads: ThreadsOpt = 0,
    quiet: QuietOpt = False,
    **flags,
) -> None:
    """Score layers, select, cut, heal the survivors, verify, evaluate and save."""
    from click.core import ParameterSource

    from interlace.config import ConfigError, read_yaml, resolve_config

    _start(threads, quiet, json_path)
    skip = {"ctx", "config", "json_path", "threads", "quiet", "target_retention", "target_speedup"}
    typed = {
        name: value
        for name, value in ctx.params.items()
        if name not in skip and ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE
    }
    if model is not None:  # typer reports a positional argument's source as DEFAULT; typed, it wins over --config
        typed["model"] = model
    try:
        file_values = read_yaml(config) if config else {}
        defaults = {k: v for k, v in ctx.params.items() if k not in skip and k not in typed and v is not None and k not in file_values and k not in (file_values.get("heal") or {})}
        # data left None: the API picks the model's default data (config.with_model_defaults)
        run_config = resolve_config(file_values, {**defaults, **typed})
    except ConfigError as error:
        fail(str(error))
    if target_retention is not None or target_speedup is not None:
        run_config.ratio = _search_ratio(run_config, target_retention, target_speedup)
    report = _run_prune(run_config)
    from accelerate import PartialState

    if PartialState().is_main_process:  # under `accelerate launch`, one process reports
        console.print(_summary_table(report))
        _print_answers(report)
        console.print(f"saved and verified: {report.out}")
        _write_report_json(json_path, report)


@app.command()
@config_flags(prune=("ratio", *SHARED), heal=("lr", "batch_size", "micro_batch_size"), defaults={"data": None})
def compare(
    model: ModelArg = None,
    *,
    methods: Annotated[str, typer.Option(help="'all' or a comma list; add -ft to heal a training-free baseline.")] = "all",
    out: Annotated[Path, typer.Option("--out", help="Directory for compare.md, compare.png, compare.json.")] = Path("runs/compare"),
    bench: Annotated[bool, typer.Option("--bench/--no-bench", help="Measure prefill speedups.")] = True,
    resume: Annotated[bool, typer.Option("--resume", help="Go on from the rows an interrupted comparison saved in --out.")] = False,
    json_path: JsonOpt = None,
    threads: ThreadsOpt = 1,
    quiet: QuietOpt = False,
    **flags,
) -> None:
    """Compare every method with dense and Dense-FT on the same data and budget."""
    from interlace.compare import ROWS, CompareConfig, CompareResumeError, parse_methods, saved_row_count
    from interlace.compare import compare as run_compare
    from interlace.config import ConfigError

    _start(threads, quiet, json_path)
    try:
        names = parse_methods(methods)
    except ValueError as error:
        fail(str(error))
    run = _run_config(model, flags, dict(methods=names, report=True), out=out, resume=resume)
    try:  # compare() validates the run before anything loads
        report = run_compare(CompareConfig(run, methods=names, bench=bench), log=_stage_log)
    except (CompareResumeError, ConfigError) as error:
        fail(str(error))
    except KeyboardInterrupt:
        saved = saved_row_count(out)
        console.print(f"[bold yellow]interrupted:[/] {saved} finished row{'s' * (saved != 1)} saved in {out / ROWS}; rerun with --resume to go on from them", highlight=False, soft_wrap=True)
        raise typer.Exit(130) from None
    console.print((out / "compare.md").read_text())
    if json_path:
        json_path.write_text(json.dumps(report, indent=2) + "\n")


@app.command()
@config_flags(prune=("method", *SHARED), defaults={"data": None})
def sweep(
    model: ModelArg = None,
    *,
    ratios: Annotated[str, typer.Option(help="Comma list of ratios to try.")] = "0.1,0.15,0.2,0.25,0.3,0.35",
    out: Annotated[Path, typer.Option("--out", help="Directory for sweep.json and the two curves.")] = Path("runs/sweep"),
    bench: Annotated[bool, typer.Option("--bench/--no-bench", help="Measure prefill speedups (else the FLOP bound).")] = True,
    json_path: JsonOpt = None,
    threads: ThreadsOpt = 1,
    quiet: QuietOpt = False,
    **flags,
) -> None:
    """Prune, heal and evaluate at several ratios from one calibration; draw the curves."""
    from interlace.config import ConfigError, validate
    from interlace.evaluation.suites import format_retention
    from interlace.heal.loop import HealInterrupted
    from interlace.sweep import Session
    from interlace.sweep import sweep as run_sweep

    _start(threads, quiet, json_path)
    try:
        values = [float(r) for r in ratios.split(",") if r.strip()]
    except ValueError:
        fail(f"--ratios must be a comma list of numbers, got {ratios!r}")
    if not values or not all(0 < r < 1 for r in values):
        fail(f"--ratios must be between 0 and 1 (exclusive), got {ratios!r}")
    checks = dict(ratios=values, ratio_flag="--ratios value", report=True)
    run = _run_config(model, flags, checks, out=out)
    try:  # every ratio against the model's depth, before the session loads it
        validate(run, **checks)
    except ConfigError as error:
        fail(str(error))
    try:
        report = run_sweep(Session(run, log=_stage_log), values, bench=bench)
    except (KeyboardInterrupt, HealInterrupted):  # a sweep keeps no state between its probes: nothing to resume
        console.print(f"[bold yellow]interrupted:[/] the sweep stopped before writing {out}; run it again to start over", highlight=False, soft_wrap=True)
        raise typer.Exit(130) from None
    table = Table(title=f"sweep: {run.method}")
    for column in ("ratio", "layers removed", "retention", "speedup", "FLOP bound"):
        table.add_column(column, justify="right")
    for probe in report["probes"]:
        speed = f"{probe['speedup']:.3f}" if probe["speedup"] else "-"
        table.add_row(f"{probe['ratio']:.3f}", str(probe["layers_removed"]), format_retention(probe["retention"]), speed, f"{probe['flop_bound']:.3f}")
    console.print(table)
    if json_path:
        json_path.write_text(json.dumps(report, indent=2) + "\n")


@app.command()
def demo(
    json_path: JsonOpt = None,
    out: Annotated[Path, typer.Option("--out", help="Where the pruned demo model goes.")] = Path("runs/demo"),
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace --out when it holds an earlier interlace result.")] = False,
    threads: ThreadsOpt = 1,
    quiet: QuietOpt = False,
) -> None:
    """Prune 25% of the embedded model with INTERLACE (the paper's method), heal, and print the before/after table."""

    _start(threads, quiet, json_path)
    # The paper's method, not prune's default (angular+protect): the demo shows INTERLACE itself, in
    # under a minute; `interlace prune` without --method runs the plan that led in the study.
    report = _run_prune(PruneConfig(out=out, ratio=0.25, method="interlace", overwrite=overwrite))
    console.print(_summary_table(report))
    console.print(f"pruned model: {report.out}")
    _write_report_json(json_path, report)
