"""The `seg-assets` command line (placeholder, filled in below)."""
import typer

app = typer.Typer(help="seg-assets: dynamic customer segmentation on Dagster + DuckDB.", no_args_is_help=True)
