"""Shared test setup: one torch thread (shared, noisy CI boxes), no network."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

torch.set_num_threads(1)


import pytest  # noqa: E402


@pytest.fixture()
def cli():
    """The real `interlace` typer app, for in-process CliRunner tests."""
    from interlace.cli import app

    return app
