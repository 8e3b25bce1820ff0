"""The ``seg-assets`` command line: generate demo data, run a refresh, prepare a Dagster home."""

from __future__ import annotations

import atexit
import logging
import os
import sys
from pathlib import Path

import typer
from rich.markup import escape

from seg_assets import refresh_cli
from seg_assets.console import console
from seg_assets.refresh_cli import closing_line as _closing_line  # noqa: F401 (tests import it from here)

app = typer.Typer(help="seg-assets: dynamic customer segmentation on Dagster + DuckDB.", no_args_is_help=True)


@app.command()
def generate(
    directory: Path = typer.Argument(..., help="Data root: files go to DIR/landing/<table>/, ground truth to DIR/truth/."),
    users: int = typer.Option(20_000, help="Number of users."),
    days: int = typer.Option(180, help="Days of history, ending at --end (churn scores need about 150: two "
                             "training cut-offs before a 90-day horizon)."),
    seed: int = typer.Option(1, help="Random seed: the same seed gives the same files."),
    format: str = typer.Option("parquet", "--format", help="csv or parquet."),
    fault_rate: float = typer.Option(0.0, help="Share of rows with the contract's faults injected (0 = clean)."),
    end: str | None = typer.Option(None, help="Last timestamp of the data (ISO-8601, UTC); default 2026-10-31T23:59:59Z."),
    clicks: bool = typer.Option(True, help="Write click events (--no-clicks for orders-only data)."),
    customers: bool = typer.Option(True, help="Write customer records."),
    lines: bool = typer.Option(True, help="Also write order lines with product ids (landing/order_items/) for the "
                               "basket rules (--no-lines: orders only, as the core benchmark compares)."),
    campaigns: bool = typer.Option(False, help="Also write four campaigns' sends with planted responses per shopper "
                                   "type and action, and actions.yaml (the activation stage: lift, next best action)."),
    reviews: bool = typer.Option(True, help="Also write English reviews of the orders, their tone by shopper type and "
                                 "order outcome (landing/reviews/: review sentiment; --no-reviews: none)."),
    devices: bool = typer.Option(False, help="Clicks also carry their device (anonymous_id): sessions without a "
                                 "checkout are often browsed before a login, their user_id the device's (identities)."),
    lines_per_order: float | None = typer.Option(None, min=1.0, help="Items (order lines) per order on average "
                                                 "(default: each shopper type's own, 2.2 over the mix)."),
    event_vocabulary: str = typer.Option("rich", "--event-vocabulary", help="Click event names: rich (20 tracker "
                                         "names over the six funnel stages) or contract (view, search, add_to_cart, checkout)."),
) -> None:
    """Write demo landing files that follow the data contract, with planted kinds of shoppers."""
    from seg_assets.demo.generate import DEFAULT_END
    from seg_assets.demo.generate import generate as run_generate
    from seg_assets.warehouse import parse_utc

    if format not in ("csv", "parquet"):
        raise typer.BadParameter("--format must be csv or parquet")
    if event_vocabulary not in ("rich", "contract"):
        raise typer.BadParameter("--event-vocabulary must be rich or contract")
    if fault_rate > 0 and (lines or reviews or devices):  # generate.py: a rejected order would come back from its lines
        console.print("[yellow]With --fault-rate, no order lines, reviews or devices are written (a faulty order "
                      "rejected at order grain would come back from its lines); generate them in a clean delivery.[/yellow]")
    try:
        last = parse_utc(end) if end else DEFAULT_END
    except ValueError as exc:
        raise typer.BadParameter(f"{end!r} is no ISO-8601 timestamp ({exc})", param_hint="--end") from None
    try:
        with console.status(f"Generating {users:,} users x {days} days ..."):
            summary = run_generate(
                directory, users=users, days=days, seed=seed, fmt=format, fault_rate=fault_rate,
                end=last, with_clicks=clicks, with_customers=customers,
                event_vocabulary=event_vocabulary, with_lines=lines, with_campaigns=campaigns,
                with_reviews=reviews, lines_per_order=lines_per_order, with_devices=devices,
            )
    except (ValueError, OSError) as exc:  # a bad number (--users 0, --fault-rate 1.5) or a folder it cannot write
        console.print(f"[red]error[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    console.print(f"[green]Generated[/green] {summary}")


@app.command()
def refresh(
    as_of: str | None = typer.Option(None, help="Fix 'now' (ISO-8601, UTC). Default: the latest event time in the data."),
    refit: bool = typer.Option(False, help="Force a new segment model fit on every user's features as of now "
                               "(implies --rebase; the promotion gate still decides)."),
    rebase: bool = typer.Option(False, help="Recompute every user's features and scores (the daily rebase), not only "
                                "the users with new rows."),
    set_: list[str] = typer.Option([], "--set", metavar="OP.FIELD=VALUE",
                                   help="A setting of the run, e.g. --set churn_model.min_auc=0.6 (repeatable; value read as YAML)."),
    config: Path | None = typer.Option(None, "--config", help="A YAML file of settings in Dagster's run config shape "
                                          "(ops: OP: config: FIELD: VALUE); --set wins over it."),
    data_dir: Path | None = typer.Option(None, envvar="SEG_DATA_DIR", help="Data root (default: $SEG_DATA_DIR or ./data)."),
    summary: bool = typer.Option(True, help="Print what was built."),
    strict: bool = typer.Option(False, help="Exit 3 when a landing file was not taken in (rejected, failed, not read: "
                                "a link out of landing/, an unknown format, or left to the next run: still being written), though the "
                                "rest was published (for cron and "
                                "CI: by default such a refresh exits 0 and names the file)."),
    engine: str | None = typer.Option(None, "--engine", envvar="SEG_ENGINE",
                                      help="duckdb (default) or spark: where ingestion, the SQL models and the features run "
                                      "(spark: local[2], or $SEG_SPARK_MASTER)."),
) -> None:
    """Run the refresh job in-process, recorded in the instance `make ui` shows; exits non-zero on failure."""
    from seg_assets.automation.run_config import forces_a_fit
    from seg_assets.settings import data_paths

    engine = refresh_cli.checked_options(engine, as_of)
    paths = data_paths(data_dir)
    overrides = refresh_cli.checked_settings(paths, config, set_, engine)
    if refresh_cli.nothing_landed(paths, overrides, strict):
        return
    if not (refit or rebase or forces_a_fit(overrides)) and refresh_cli.segments_current(paths, overrides, as_of, engine, strict):
        return
    outcome, instance = refresh_cli.run_in_turn(paths, as_of, refit, rebase, overrides, engine, WAIT_FOR_RUNS_SECONDS)
    refresh_cli.print_outcome(outcome, paths, instance, summary)
    if strict:
        refresh_cli.exit_if_files_not_taken_in(outcome, paths)


# How long a refresh waits for another one of its data root (a module setting, so tests can shorten it): as long as a
# writer waits for the warehouse's lock (resource duckdb).
WAIT_FOR_RUNS_SECONDS = 3600.0


@app.command("import-cdnow")
def import_cdnow_command(
    src: Path = typer.Argument(..., help="CDNOW_master.txt or CDNOW_sample.txt (from the `lifetimes` package's datasets)."),
    directory: Path = typer.Argument(..., help="Data root: orders go to DIR/landing/orders/."),
    until: str | None = typer.Option(None, help="Keep purchases up to this date (YYYY-MM-DD, inclusive)."),
    format: str = typer.Option("csv", "--format", help="csv or parquet."),
) -> None:
    """Convert the CDNOW purchase history into landing files of the orders contract (orders only)."""
    from seg_assets.churn.cdnow import import_cdnow

    console.print(str(import_cdnow(src, directory, until=until, fmt=format)))


@app.command("eval-cdnow")
def eval_cdnow_command(
    work_dir: Path = typer.Option(Path("build/eval-cdnow"), help="Scratch folder (its data/ is rebuilt)."),
    dataset: str = typer.Option("sample", help="sample (2,357 customers, the paper's) or master (23,570)."),
    compare: bool = typer.Option(True, help="Also train and score each churn model kind (gbm, logreg) on the same "
                                 "snapshots; recency, frequency and BG/NBD are scored either way."),
) -> None:
    """The paper's split: weeks 1-39 in, refresh as of 1997-09-30, AUC on "buys in weeks 40-78"."""
    from seg_assets.churn.evaluate import run_eval_cdnow

    result = run_eval_cdnow(work_dir, dataset=dataset, compare=compare, echo=console.print)
    if dataset == "sample" and result.churn_auc < 0.775:
        console.print(f"[red]churn_probability AUC {result.churn_auc:.4f} < 0.775[/red]")
        raise typer.Exit(1)


@app.command("init-dagster-home")
def init_dagster_home(
    path: Path | None = typer.Argument(None, help="The DAGSTER_HOME folder to prepare (default: $DAGSTER_HOME, "
                                          "else $SEG_DATA_DIR/dagster_home, the one `seg-assets refresh` records in)."),
    print_path: bool = typer.Option(False, "--print-path", help="Print only the folder (for `make ui`)."),
) -> None:
    """Write dagster.yaml: one DuckDB writer at a time (pool 'duckdb'), runs queued."""
    from seg_assets.automation.instance import dagster_home, write_dagster_yaml
    from seg_assets.settings import data_paths

    home = path or dagster_home(data_paths())
    target = write_dagster_yaml(home)
    if print_path:
        print(target.parent.resolve())
    else:
        console.print(f"DAGSTER_HOME ready: {escape(str(target))}", highlight=False)


_exit_code: list[int] = []


def _exit_without_teardown() -> None:
    """The last exit handler: flush, then end the process without Python's teardown of its modules.

    A refresh imports thousands of modules (Dagster, scikit-learn, SciPy, polars). Tearing them down
    runs several full garbage collections over half a million objects: 1.3 s of wall and CPU per refresh
    (200k users, medians of alternated runs), spent on memory the OS frees anyway. Registered first, this runs
    after every other exit handler (those of
    logging, thread pools and the libraries), as Instagram did for its web workers. Everything the
    command wrote is committed by then (DuckDB and the Dagster instance close per use).
    """
    if not _exit_code:  # an unexpected exception: the normal teardown, with its traceback
        return
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`| head`) or stream
            pass
    os._exit(_exit_code[0])


def main() -> None:
    """Console entry point (``seg-assets``): the command, then a fast exit."""
    atexit.register(_exit_without_teardown)
    try:
        app()  # standalone mode: always ends in SystemExit
    except SystemExit as exc:
        code = exc.code
        _exit_code.append(code if isinstance(code, int) else 0 if code is None else 1)
        raise


if __name__ == "__main__":  # python -m seg_assets.cli, as the entry point
    main()
