"""The steps of ``seg-assets refresh`` (cli.py calls them in order) and the lines it prints.

Each step either returns what the next one needs or ends the command: ``typer.BadParameter`` or one line and exit 2
for bad input, exit 3 under ``--strict`` for landing files not taken in, exit 1 for a failed run (the signal's code
when Ctrl-C or SIGTERM stopped it).
"""

from __future__ import annotations

import os
from pathlib import Path

import typer
from filelock import FileLock
from rich.console import Console
from rich.markup import escape

from seg_assets.console import console


def checked_options(engine: str | None, as_of: str | None) -> str | None:
    """--engine and --as-of, refused as usage errors before anything is read; returns the engine normalised (duckdb,
    spark or None: the environment's)."""
    from seg_assets.warehouse import as_of_setting

    if engine is not None and engine.strip().lower() not in ("duckdb", "spark"):
        raise typer.BadParameter(f"{engine!r}: the engine is duckdb or spark", param_hint="--engine")
    if as_of is not None:
        try:
            as_of_setting(as_of)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--as-of") from None
    return engine.strip().lower() if engine else None


def checked_settings(paths, config: Path | None, set_: list[str], engine: str | None) -> dict:
    """The run's settings (--config, then --set), once the environment, the data root's config files and the engine's
    support of the sources are checked: each problem one line, exit 2, before anything runs."""
    from seg_assets.automation.run_config import settings_overrides
    from seg_assets.config_files import check_files
    from seg_assets.errors import InputError
    from seg_assets.spark.session import engine_from_env

    try:
        _check_environment(paths)
        from seg_assets.ingest.source_config import check_engine, load_sources  # loads the stages (the SQL models too)

        overrides = settings_overrides(config, set_)
        check_files(paths.root)  # sources.yaml, actions.yaml, lexicons: refused here, not after the stages before theirs ran
        spark = (engine or engine_from_env()) == "spark"
        check_engine(load_sources(paths.root), spark)
        from seg_assets.spark.ingest import kept_engine_message, written_by_spark

        if not spark and written_by_spark(paths):  # it failed in the run's first step, after the summary, exit 1
            raise InputError(kept_engine_message(paths.root))
    except InputError as exc:
        _input_error(exc)
    return overrides


def nothing_landed(paths, overrides: dict, strict: bool) -> bool:
    """True (and said) when there is nothing to refresh: no warehouse, no settings given (those are checked by a run),
    and no landing file a source reads. Files that no source reads are named, and exit 3 under --strict."""
    from seg_assets.publish.state import landed

    if overrides.get("ops") or paths.warehouse.exists() or landed(paths):
        return False
    if unread := _unread(paths):  # files were landed, none that a source reads (a .tsv export, a misnamed folder)
        console.print(f"Nothing read: {len(unread):,} file(s) under {escape(str(paths.landing))}, none that a source "
                      "reads (named above): fix their names or folders, or map them in sources.yaml (see the README).",
                      highlight=False, soft_wrap=True)
        raise typer.Exit(3 if strict else 0)
    where = "" if paths.root.is_dir() else f" (the data root {escape(str(paths.root))} does not exist: a typo in SEG_DATA_DIR?)"
    console.print(f"Nothing to do: no landing files under {escape(str(paths.landing))} yet{where}. Land orders, order lines or "
                  f"clicks there (see the README), or make a demo shop: seg-assets generate {escape(str(paths.root))}.",
                  highlight=False, soft_wrap=True)
    return True


def segments_current(paths, overrides: dict, as_of: str | None, engine: str | None, strict: bool) -> bool:
    """True (and said) when the published segments were built from these landing files, settings and code: no run.
    Under --strict, files still not taken in (each unread one named) exit 3."""
    from seg_assets.automation.run_config import merge, refresh_run_config
    from seg_assets.publish.state import FAILED_FILES, nothing_new, settings_fingerprint
    from seg_assets.spark.session import engine_from_env

    ops = merge(refresh_run_config(), overrides)["ops"]
    current = nothing_new(paths, settings_fingerprint(ops, as_of, engine or engine_from_env()))
    if not current:
        return False
    console.print(f"[green]Segments are current[/green]: {escape(current)}.", highlight=False, soft_wrap=True)
    if strict and (_unread(paths) or FAILED_FILES in current):
        raise typer.Exit(3)
    return True


REFRESH_LOCK = ".refresh.lock"  # in the data root: one command-line refresh of a root at a time


def check_writable(root: Path) -> None:
    """One line and exit 2 when the data root cannot be written: a read-only mount (a tester's) failed on the refresh
    lock with a 170-line traceback. Only ``landing/`` may be read-only; everything else is written by a refresh."""
    from seg_assets.errors import InputError

    lock = root / REFRESH_LOCK
    try:
        root.mkdir(parents=True, exist_ok=True)
        os.close(os.open(lock, os.O_RDWR | os.O_CREAT, 0o644))
    except OSError as exc:
        _input_error(InputError(f"cannot write the data root {root} ({exc.strerror or exc}: {exc.filename or lock}): a "
                                "refresh writes its lock, warehouse, models, state and bi/ there; give it write access "
                                "(landing/ alone may be read-only)"))


def run_in_turn(paths, as_of: str | None, refit: bool, rebase: bool, overrides: dict, engine: str | None,
                wait_seconds: float):
    """Run the refresh job in the instance `make ui` shows, once no other refresh of the data root runs (waiting at
    most ``wait_seconds``), under a progress spinner; Ctrl-C and SIGTERM stop it (interrupts.py).
    Returns (the run's outcome, the instance)."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from seg_assets import interrupts
    from seg_assets.automation.instance import open_instance, process_tags
    from seg_assets.errors import InputError

    check_writable(paths.root)  # before the instance, which may live in the root too (dagster_home/)
    instance = open_instance(paths)  # the one `make ui` shows: the run, its logs and materializations
    _fail_dead_runs(instance)
    turn = FileLock(str(paths.root / REFRESH_LOCK), thread_local=False)
    started = []  # the turn was taken: the run starts
    try:
        from seg_assets.refresh import run_refresh  # loads the definitions: a bad setting in the environment shows here

        with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console) as progress:
            progress.add_task("refresh: ingest, features, segmentation, publish", total=None)
            outcome = interrupts.run_until_signal(lambda: run_refresh(
                paths.root, as_of=as_of, refit=refit, rebase=rebase, overrides=overrides, instance=instance,
                tags={"seg-assets/launched_by": "cli", **process_tags(paths.root)}, engine=engine,
                before_run=lambda: (_take_turn(turn, instance, wait_seconds), started.append(True))))
    except InputError as exc:
        _input_error(exc)
    except Exception:
        if not interrupts.STOP.is_set():
            raise
        # a signal in a step ends the run, which run_refresh returns; one before it (waiting for the turn) or after it
        # (the closing look at the warehouse) raises here: say which, not "not started" after a run that published
        console.print("[red]Refresh not started[/red]: interrupted (Ctrl-C or SIGTERM) while waiting for its turn"
                      if not started else "[red]Refresh stopped[/red]: interrupted (Ctrl-C or SIGTERM) after its run "
                      "ended; the run's outcome is recorded in the Dagster instance (`make ui`, Runs)",
                      highlight=False, soft_wrap=True)
        raise typer.Exit(interrupts.exit_code()) from None
    finally:
        if turn.is_locked:
            turn.release()
    return outcome, instance


def print_outcome(outcome, paths, instance, summary: bool) -> None:
    """What the run did: each stage, each problem, the summary (``summary``), the closing line and where the run is
    recorded; exit 1 if it failed, or the signal's exit code if Ctrl-C or SIGTERM stopped it."""
    from seg_assets import interrupts
    from seg_assets.report import print_summary

    if not outcome.success:  # its steps may have written tables newer than the publication: the next refresh runs
        from seg_assets.publish.state import mark_not_current

        mark_not_current(paths)
    if interrupts.STOP.is_set() and not outcome.success:
        console.print(_interrupted_line(outcome, paths, instance), highlight=False, soft_wrap=True)
        raise typer.Exit(interrupts.exit_code())
    for stage in outcome.stages:
        mark = "[green]ok[/green]" if stage.success else "[red]FAILED[/red]"
        console.print(f"{stage.group} {mark} ({stage.seconds:.1f}s)")
    for problem in outcome.problems:
        colour = {"warning": "yellow"}.get(problem.kind, "red")
        console.print(f"[{colour}]{problem.kind}[/] {escape(problem.line())}", highlight=False, soft_wrap=True)
        if problem.traceback:
            console.print(problem.traceback, markup=False, highlight=False, soft_wrap=True)
    if summary:
        print_summary(paths.root, console)
    console.print(closing_line(outcome, paths), highlight=False, soft_wrap=True)
    console.print(f"Run {outcome.run_id} is in the Dagster instance at {escape(instance.root_directory)}.", highlight=False,
                  soft_wrap=True)
    if not outcome.success:
        raise typer.Exit(1)


def _waiting(outcome, paths) -> tuple[set[str], list[str]]:
    """(the files this run named as not taken in, those an earlier refresh failed or rejected, unchanged since)."""
    from seg_assets.publish.state import not_taken_in

    named = {p.where for p in outcome.problems if p.kind == "file"}
    return named, [name for name in not_taken_in(paths) if name not in named]


def exit_if_files_not_taken_in(outcome, paths) -> None:
    """--strict after a successful run: exit 3 if a landing file was not taken in (not read, failed or rejected by
    this run, or by an earlier one and unchanged since), each named."""
    unread = _unread(paths)  # named either way
    named, waiting = _waiting(outcome, paths)
    for name in waiting[:10]:
        console.print(f"[yellow]not taken in[/yellow] {escape(f'landing/{name}')}: failed or rejected by an earlier "
                      "refresh, unchanged since (see meta.ingest_ledger)", highlight=False, soft_wrap=True)
    if unread or named or waiting:
        raise typer.Exit(3)


def _fail_dead_runs(instance) -> list:
    """Mark failed the runs left in progress by a process that ended, each said in a warning; those marked."""
    from seg_assets.automation.instance import PID_TAG, fail_dead_runs

    dead = fail_dead_runs(instance)
    for run in dead:
        console.print(f"[yellow]warning[/yellow] run {run.run_id} was left in progress by process {run.tags[PID_TAG]}, "
                      "which ended (killed?): marked failed, so queued runs are not held back", highlight=False, soft_wrap=True)
    return dead


def _take_turn(turn, instance, wait_seconds: float, poll_seconds: float = 2.0) -> None:
    """One refresh at a time, once the settings are checked (a bad one is refused at once): wait for another
    command-line refresh of this data root (two started half a second apart both ran), then for a run of the instance
    (the schedule's, the sensor's, the UI's) that writes the warehouse; after ``wait_seconds``, one line, exit 1."""
    import time

    from filelock import Timeout

    from seg_assets import interrupts
    from seg_assets.automation.instance import runs_writing

    deadline, told = time.monotonic() + wait_seconds, set()
    while True:
        interrupts.check()  # Ctrl-C while waiting stops the wait (it ran the refresh once the wait ended)
        try:
            turn.acquire(timeout=poll_seconds)
            break
        except Timeout:
            if not told:
                told.add("cli")
                console.print("waiting for another seg-assets refresh of this data root to finish", highlight=False)
            if time.monotonic() > deadline:
                console.print("[red]Refresh not started[/red]: another seg-assets refresh of this data root has run for "
                              f"{wait_seconds / 60:.0f} min", highlight=False, soft_wrap=True)
                raise typer.Exit(1) from None
    while True:
        _fail_dead_runs(instance)  # a refresh SIGKILLed while this one waited for the lock: marked failed, not waited
        running = runs_writing(instance)  # for (a tester's waited for the dead run, and would have for an hour)
        if not running:
            break
        interrupts.check()
        for run in running:
            if run.run_id not in told:
                told.add(run.run_id)
                console.print(f"waiting for run {run.run_id} ({run.job_name}) to finish: one refresh at a time",
                              highlight=False, soft_wrap=True)
        if time.monotonic() > deadline:
            console.print(f"[red]Refresh not started[/red]: run {running[0].run_id} has been writing the warehouse for "
                          f"{wait_seconds / 60:.0f} min; let it finish, or terminate it in the Dagster UI "
                          "(Runs), then refresh again", highlight=False, soft_wrap=True)
            raise typer.Exit(1)
        time.sleep(poll_seconds)


def _unread(paths) -> dict[str, str]:
    """--strict: the landing files no source reads (a link out of landing/, an unknown format), each named."""
    from seg_assets.publish.state import not_read

    unread = not_read(paths)
    for name, why in list(unread.items())[:10]:
        console.print(f"[yellow]not read[/yellow] {escape(f'landing/{name}: {why}')}", highlight=False, soft_wrap=True)
    return unread


def _what_bi_shows(outcome, paths) -> str:
    """The segments BI tools see after a run that did not finish: this run's (a step after bi_segments failed, the
    audiences say), the earlier publication's, or none yet."""
    from seg_assets.publish.state import published, shown_as_of

    if outcome.published:
        return "this run had published its segments"
    shown = shown_as_of(paths) if published(paths) else None
    as_of = f" (as of {shown})" if shown else ""
    return f"published segments{as_of} were left as they were" if published(paths) else "nothing has been published yet"


def closing_line(outcome, paths) -> str:
    """Says how it went, repeats the causes, and says what BI tools see now."""
    from seg_assets.publish.state import not_read

    causes = "; ".join(escape(p.line()) for p in outcome.causes)
    if outcome.success:
        unread = [f"{name}: {why}" for name, why in not_read(paths).items()]  # a link out of landing/, a pipe, ...
        # a file an earlier refresh failed or rejected, unchanged since: named as when the segments are current (a
        # tester's was named then and with --strict, not after a refresh that published other files)
        _, waiting = _waiting(outcome, paths)
        earlier = (f"{len(waiting)} file(s) failed or rejected by an earlier refresh, unchanged since ("
                   + ", ".join(escape(f"landing/{n}") for n in waiting[:3]) + ", ..." * (len(waiting) > 3)
                   + "; see meta.ingest_ledger)") if waiting else ""
        causes = "; ".join(filter(None, [causes, *map(escape, unread[:3]), f"{len(unread) - 3} more not read" * (len(unread) > 3),
                                         earlier]))
        return f"[green]Refresh done[/green] in {outcome.seconds:.1f}s" + (f"; not taken in: {causes}" if causes else "")
    bi = _what_bi_shows(outcome, paths) + (" before it failed" if outcome.published else "")
    return f"[red]Refresh failed[/red]: {causes or 'see the errors above'}. {bi[0].upper()}{bi[1:]}."


def _interrupted_line(outcome, paths, instance) -> str:
    """Ctrl-C or SIGTERM stopped the run: what was published, and what to do."""
    bi = _what_bi_shows(outcome, paths)
    if not outcome.published:
        bi = f"nothing published by this run; {bi}"
    return (f"[red]interrupted[/red]: {bi}; run seg-assets refresh again to finish (run {outcome.run_id}, marked failed, "
            f"is in the Dagster instance at {escape(instance.root_directory)}).")


def _check_environment(paths) -> None:
    """The environment's settings, each refused in one line (InputError) before anything runs or is opened."""
    from seg_assets.automation.instance import dagster_home
    from seg_assets.settings import duckdb_memory_limit, settle_seconds
    from seg_assets.warehouse import sql_model_files

    dagster_home(paths), sql_model_files(), settle_seconds(), duckdb_memory_limit()


def _input_error(exc: Exception) -> None:
    """An input problem: one line on stderr, exit 2, no traceback."""
    Console(stderr=True, width=None if Console(stderr=True).is_terminal else 160).print(
        f"[red]error[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)
