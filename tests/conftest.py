"""Shared test setup: one torch thread (shared, noisy CI boxes), no network."""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))  # embedded_build: the toy model's builder
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

torch.set_num_threads(1)


import pytest  # noqa: E402


@pytest.fixture()
def cli():
    """The real `interlace` typer app, for in-process CliRunner tests."""
    from interlace.cli.app import app

    return app
