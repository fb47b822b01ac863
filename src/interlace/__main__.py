"""`python -m interlace` runs the CLI."""

from interlace.cli import app

app(prog_name="interlace")
