"""`interlace bench A [B]`: TTFT, decode tokens/s and memory, dense vs pruned, beside the FLOP bound.

Wired into the main app by ``register(app)`` (see ``interlace.cli.app``); the work is done by
``interlace.speed.bench.benchmark``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from interlace.cli.flags import settings_flags
from interlace.config.options import DTYPES
from interlace.console import check_json_path, check_threads, console, fail
from interlace.speed.settings import BenchSettings, parse_image_size

# The settings --fast changes: their flags are unset (None) by default, so that --fast can decide.
SET_BY_FAST = {
    f.name: f"default {getattr(BenchSettings(), f.name)}; --fast {getattr(BenchSettings.fast(), f.name)}"
    for f in dataclasses.fields(BenchSettings)
    if getattr(BenchSettings(), f.name) != getattr(BenchSettings.fast(), f.name)
}
WEIGHT_DTYPES = f"{', '.join(DTYPES[:-1])} or {DTYPES[-1]}"


def comparison_table(comparison) -> Table:
    """The rich table printed by `interlace bench` (one column per model, then B vs A and the bound)."""
    a, b = comparison.a, comparison.b
    table = Table(title=f"interlace bench: {a.prompt_tokens} prompt tokens ({a.image_tokens} image), "
                        f"{a.new_tokens} new")
    table.add_column("")
    table.add_column(a.name, justify="right")
    if b is not None:
        for column in (b.name, f"{b.name} vs {a.name}", "FLOP bound"):
            table.add_column(column, justify="right")

    def row(label: str, value, fmt: str, speedup=None, bound=None) -> None:
        cells = [fmt.format(value(r)) if value(r) is not None else "n/a" for r in (a, b) if r is not None]
        if b is not None:
            cells += [f"{speedup:.3f}x" if speedup else "", f"{bound:.3f}x" if bound else ""]
        table.add_row(label, *cells)

    row("decoder layers", lambda r: r.num_layers, "{}")
    c = comparison
    row("TTFT / prefill (ms)", lambda r: r.ttft_s * 1e3, "{:.1f}", c.prefill_speedup, c.prefill_flop_bound)
    row("decode (tokens/s)", lambda r: r.decode_tokens_per_s, "{:.1f}", c.decode_speedup, c.decode_flop_bound)
    row("prefill GFLOPs", lambda r: r.prefill_flops / 1e9, "{:.2f}")
    row("decode GFLOPs / token", lambda r: r.decode_flops_per_token / 1e9, "{:.3f}")
    row("run memory (MiB)", lambda r: None if r.run_memory_bytes is None else r.run_memory_bytes / 2**20, "{:.1f}")
    row("weights (MiB)", lambda r: r.weights_bytes / 2**20, "{:.1f}")
    return table


@settings_flags(BenchSettings, unset=SET_BY_FAST)  # --prompt-tokens, --new-tokens, --repeats, --warmup, --threads, --seed
def bench(
    model_a: Annotated[str, typer.Argument(help="Reference (dense) checkpoint directory, Hub id, or 'embedded'.")],
    model_b: Annotated[Optional[str], typer.Argument(
        help="Model to compare (pruned); omit to measure A alone.")] = None,
    *,
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Also write the results as JSON here.")] = None,
    image_size: Annotated[str, typer.Option(
        help="Synthetic image HxW, 'none', or 'auto' (448x448 for vision-language models, none otherwise).")] = "auto",
    fast: Annotated[bool, typer.Option("--fast", help="Few short runs: a rough speedup in seconds.")] = False,
    dtype: Annotated[str, typer.Option(help=f"Weights dtype: {WEIGHT_DTYPES}.")] = DTYPES[0],
    device: Annotated[Optional[str], typer.Option(help="cpu, cuda, cuda:1, ...; default cuda when available.")] = None,
    engine: Annotated[str, typer.Option(
        help="transformers (generate here) or vllm (served from .venv-vllm; `make vllm-setup`).")] = "transformers",
    eager: Annotated[bool, typer.Option(
        "--eager", help="--engine vllm: skip torch.compile (starts in seconds; slower runs).")] = False,
    **flags,
) -> None:
    """Time prefill (TTFT) and decode of A and B alternately, and compare with the FLOP bound.

    --engine vllm serves each checkpoint with vLLM from .venv-vllm instead (text prompts).
    """
    import torch

    from interlace.loading import ModelNotFoundError, load_model
    from interlace.speed.bench import benchmark, device_problems

    if dtype not in DTYPES:
        fail(f"--dtype must be {WEIGHT_DTYPES}, got {dtype!r}")
    if engine not in ("transformers", "vllm"):
        fail(f"--engine must be transformers or vllm, got {engine!r}")
    if engine == "vllm" and (model_b is None or device not in (None, "cpu")):
        fail("--engine vllm compares two local checkpoints on the CPU: pass DENSE and PRUNED, no --device")
    try:
        base = BenchSettings.fast() if fast else BenchSettings()  # what a flag left unset takes
        given = {name: value for name, value in flags.items() if value is not None}
        settings = BenchSettings(**{**vars(base), **given, "image_size": parse_image_size(image_size)})
    except ValueError as error:
        message = str(error)
        for field in dataclasses.fields(BenchSettings):
            message = message.replace(f"{field.name} must", f"--{field.name.replace('_', '-')} must")  # the user's flag spelling
        fail(message)
    check_threads(settings.threads)
    if engine == "transformers" and (problems := device_problems(device)):
        fail("; ".join(problems))
    check_json_path(json_path)
    _check_models(model_a, model_b)
    if engine == "vllm":
        _bench_vllm(model_a, model_b, settings, dtype, eager, json_path)
        return
    try:
        loaded_a, processor = load_model(model_a, getattr(torch, dtype), device)
        loaded_b = load_model(model_b, getattr(torch, dtype), device)[0] if model_b else None
    except ModelNotFoundError as error:
        fail(str(error))
    try:
        names = tuple(Path(m).name or m for m in (model_a, model_b or "B"))
        comparison = benchmark(loaded_a, loaded_b, processor, settings, names=names)
    except ValueError as error:
        fail(str(error))
    console.print(comparison_table(comparison))
    console.print(f"[dim]{settings.repeats} alternating runs each: times are medians, speedups the median of "
                  f"per-round ratios. Memory: {comparison.memory_method}[/]", highlight=False, soft_wrap=True)
    if json_path:
        comparison.save(json_path)


def _check_models(*models: str | None) -> None:
    """Config and weight headers of each model (no weights load): a cut-off download fails here."""
    from interlace.loading import ModelNotFoundError, check_model

    problems = []
    for model in models:
        if model is not None:
            try:
                check_model(model)
            except ModelNotFoundError as error:
                problems.append(str(error))
    if problems:
        fail("; ".join(problems))


def _bench_vllm(model_a: str, model_b: str, settings, dtype: str, eager: bool, json_path: Optional[Path]) -> None:
    """`interlace bench --engine vllm`: the same table, timed by vLLM serving each checkpoint."""
    from interlace.loading import ModelNotFoundError, resolve
    from interlace.speed.vllm import VllmError, vllm_bench

    try:
        dirs = [resolve(m) for m in (model_a, model_b)]
    except ModelNotFoundError as error:
        fail(str(error))
    if not all(Path(d).is_dir() for d in dirs):
        fail(f"--engine vllm needs local checkpoint directories, got {model_a} and {model_b}")
    names = tuple(Path(m).name or m for m in (model_a, model_b))
    try:
        comparison = vllm_bench(*dirs, settings, names=names, dtype=dtype, enforce_eager=eager)
    except (ValueError, VllmError) as error:
        fail(str(error))
    console.print(comparison_table(comparison))
    console.print(f"[dim]{comparison.machine['engine']}, {comparison.machine['threads']} thread(s); "
                  f"{settings.repeats} alternating runs each: times are medians, speedups the median of per-round "
                  f"ratios.[/]", highlight=False, soft_wrap=True)
    if json_path:
        comparison.save(json_path)


def register(app: typer.Typer) -> None:
    """Add the `bench` command to ``app``."""
    app.command("bench")(bench)
