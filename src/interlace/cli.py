"""The `interlace` command line: a thin layer over the Python API."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
console = Console()

ModelArg = Annotated[
    Optional[str], typer.Argument(help="Checkpoint directory or Hub id; omit for the embedded model.")
]
JsonOpt = Annotated[Optional[Path], typer.Option("--json", help="Also write the results as JSON here.")]
ThreadsOpt = Annotated[int, typer.Option("--threads", help="torch CPU threads (0: torch's default).")]


def fail(message: str) -> None:
    """Print a one-line error and exit with status 2 (bad input), no traceback."""
    console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(2)


def _threads(threads: int) -> None:
    import torch

    if threads < 0:
        fail(f"--threads must be >= 0, got {threads}")
    if threads:
        torch.set_num_threads(threads)


def _accuracy_table(title: str, columns: dict[str, dict]) -> Table:
    table = Table(title=title)
    table.add_column("task")
    for name in columns:
        table.add_column(name, justify="right")
    tasks = sorted({task for result in columns.values() for task in result["tasks"]})
    for task in tasks:
        table.add_row(task, *(f"{result['tasks'].get(task, float('nan')):.3f}" for result in columns.values()))
    table.add_row("[bold]overall", *(f"[bold]{result['overall']:.3f}" for result in columns.values()))
    return table


@app.callback()
def main() -> None:
    """Prune whole decoder layers from vision-language models and heal the survivors (INTERLACE)."""


@app.command("eval")
def eval_command(
    model: ModelArg = None,
    json_path: JsonOpt = None,
    n_per_task: Annotated[int, typer.Option(help="Held-out questions per task (1..1000).")] = 500,
    batch_size: Annotated[int, typer.Option(help="Prompts per generate call.")] = 64,
    threads: ThreadsOpt = 0,
) -> None:
    """Evaluate a model on the built-in held-out visual-QA suite (greedy, exact match)."""
    from interlace.data import vqa
    from interlace.evaluate import evaluate
    from interlace.loading import ModelNotFoundError, load_model

    _threads(threads)
    if not 1 <= n_per_task <= vqa.TEST_RESERVE:
        fail(f"--n-per-task must be in 1..{vqa.TEST_RESERVE}, got {n_per_task}")
    if batch_size < 1:
        fail(f"--batch-size must be >= 1, got {batch_size}")
    try:
        loaded, processor = load_model(model)
    except ModelNotFoundError as error:
        fail(str(error))
    result = evaluate(loaded, processor, vqa.load_split("test", n_per_task), batch_size=batch_size)
    console.print(_accuracy_table(f"{model or 'embedded'}: held-out accuracy (n={result.n})", {"accuracy": result.to_json()}))
    if json_path:
        result.save(json_path)


@app.command()
def demo(json_path: JsonOpt = None, threads: ThreadsOpt = 1) -> None:
    """Run interlace on the embedded model and print the before/after table."""
    from interlace.data import vqa
    from interlace.evaluate import evaluate
    from interlace.loading import load_model

    _threads(threads)
    started = time.perf_counter()
    loaded, processor = load_model(None)
    dense = evaluate(loaded, processor, vqa.load_split("test", 500), description="dense model")
    report = {"dense": dense.to_json(), "wall_seconds": {"evaluate_dense": round(time.perf_counter() - started, 1)}}
    console.print(_accuracy_table("embedded model: held-out accuracy", {"dense": report["dense"]}))
    if json_path:
        json_path.write_text(json.dumps(report, indent=2) + "\n")
