"""CLI commands for layer surgery: ``interlace archs`` and ``interlace cut``.

Thin wrappers over ``interlace.arch.supported_families`` and ``interlace.cut.cut_checkpoint``;
``cli.py`` adds them to the main app with ``register(app)``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from interlace.console import console, fail


def parse_drop(text: str) -> list[int]:
    """Parse ``--drop 3,7,12`` into ``[3, 7, 12]``.

    Raises:
        ValueError: empty list or a part that is not a non-negative integer.
    """
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not parts or not all(part.isdigit() for part in parts):
        raise ValueError(f"--drop wants comma-separated layer indices like 3,7,12, got {text!r}")
    return [int(part) for part in parts]


def archs(
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Also write the families as JSON here.")] = None,
) -> None:
    """List the model families whose decoder layers interlace can remove."""
    from interlace.arch import supported_families

    families = supported_families()
    table = Table(title=f"supported families ({len(families)})")
    for column in ("family", "model_type", "decoder layers", "what is special"):
        table.add_column(column, overflow="fold")
    for family in families:
        table.add_row(family["name"], ", ".join(family["model_types"]), family["layers"], family["special"])
    console.print(table)
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(families, indent=2) + "\n")


def cut(
    src: Annotated[Path, typer.Argument(help="Checkpoint directory to cut (config.json + safetensors).")],
    dst: Annotated[Path, typer.Argument(help="Output directory (must not exist).")],
    drop: Annotated[str, typer.Option("--drop", help="Decoder layers to remove, e.g. 3,7,12.")],
    deepstack: Annotated[str, typer.Option(help="Qwen3-VL DeepStack layers: realign or protect.")] = "realign",
    verify_output: Annotated[bool, typer.Option("--verify/--no-verify", help="Reload and check the output.")] = True,
) -> None:
    """Cut decoder layers from a saved checkpoint shard by shard, without loading the model."""
    from interlace.arch import UnsupportedModelError
    from interlace.cut import cut_checkpoint
    from interlace.evaluation.verify import VerificationError, verify
    from interlace.files import WriteError

    reports = []  # the copy is verified before it is renamed to dst: a failure leaves nothing

    def check(path: Path) -> None:
        if verify_output:
            reports.append(verify(path))

    try:
        indices = parse_drop(drop)
        out = cut_checkpoint(src, dst, indices, deepstack=deepstack, check=check)
    except (ValueError, FileNotFoundError, FileExistsError, UnsupportedModelError) as error:
        fail(str(error))
    except WriteError as error:
        fail(f"{error}; nothing was written", code=1)
    except VerificationError as error:
        fail(f"the cut of {src} failed verification, so {dst} was not written: {error}", code=1)
    console.print(f"wrote {out} without layers {sorted(indices)}")
    if reports:
        report = reports[0]
        console.print(
            f"verified: {report.model_class} reloads with {report.num_layers} layers "
            f"(original {report.kept_layers}); cached == uncached generation ({report.generation_note})"
        )


def register(app: typer.Typer) -> None:
    """Add ``archs`` and ``cut`` to ``app``."""
    app.command("archs")(archs)
    app.command("cut")(cut)
