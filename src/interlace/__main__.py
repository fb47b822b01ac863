"""`python -m interlace` runs the CLI."""

from interlace.cli.app import app

app(prog_name="interlace")
