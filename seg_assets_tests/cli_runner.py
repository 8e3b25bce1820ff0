"""The `seg-assets` command line in-process, through typer's runner: the one runner of the `test_cli_*.py` modules."""

from typer.testing import CliRunner

runner = CliRunner()
