"""``make bench``: cold, incremental, no-op refresh vs the naive script and the DuckDB floor, on the same files.

Every measured command is a subprocess (as a user runs it) with its own SEG_DATA_DIR and DAGSTER_HOME, so
the per-asset step timings are read back from that Dagster instance afterwards. One command at a time:
the figures are only meaningful if nothing else of ours competes for the cores.

    python bench/run.py --size small|medium|large [--seed 1] [--repeat N] [--keep] [--only cold,naive,...]
                        [--engine duckdb|spark] [--lines]

``--engine spark`` runs the pipeline scenarios with ``seg-assets refresh --engine spark`` (Spark local mode,
``$SEG_SPARK_MASTER`` for a cluster); the baselines stay what they are, so the two reports compare directly.

``--lines`` uses a data variant with order lines (and reviews) in the base and follow-up deliveries (cached
apart, ``...-lines``), adds the scenario ``clicks-only`` (after the incremental one, or right after cold when
``--only`` leaves incremental and no-op out: a delivery of clicks alone, no orders, lines or reviews) and
reports the share of each refresh taken by the steps of the reviews, baskets and recommend packages (issue 15:
rules, recommendations and sentiment), in wall and in CPU seconds.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import data, report  # noqa: E402
from bench.measure import Measurement, run_measured  # noqa: E402
from bench.timings import RunTiming, asset_groups, asset_packages, new_runs  # noqa: E402

OUT = data.BENCH_DIR / "out"
SCENARIOS = ("cold", "incremental", "no-op", "naive", "floor")
LINES_SCENARIOS = ("clicks-only",)  # only with --lines
PIPELINE = ("cold", "incremental", "clicks-only", "no-op")
ISSUE15 = ("reviews", "baskets", "recommend")  # packages of definitions.STAGES whose share --lines reports


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SEG_DATA_DIR", "DAGSTER_HOME")}
    return env | {"GX_ANALYTICS_ENABLED": "false", "DAGSTER_DISABLE_TELEMETRY": "1"} | extra


def _say(msg: str) -> None:
    print(f"[bench {datetime.now():%H:%M:%S}] {msg}", flush=True)


def _measure(label: str, cmd: list[str], logs: Path, **env: str) -> Measurement:
    _say(f"{label}: {' '.join(map(str, cmd))}")
    m = run_measured([str(c) for c in cmd], label, env=_env(**env), log_dir=logs)
    state = "ok" if m.ok else f"FAILED (exit {m.returncode}); stderr tail:\n{m.stderr_tail}"
    _say(f"{label}: {state}  wall {m.wall_s:.1f}s  cpu {m.cpu_s:.1f}s  peak RSS {m.peak_rss_mib:,.0f} MiB")
    return m


def one_pass(only: set[str], base: Path, followup: Path,
             gen: dict, engine: str = "duckdb", clicks: Path | None = None,
             exclude: tuple[str, ...] = ()) -> tuple[dict, dict, dict, Path, str]:
    """Cold, incremental, (clicks-only,) no-op on a fresh scenario, then the baselines: (measurements, runs,
    notes, dir, home). ``clicks``: the root of a delivery whose clicks alone make the clicks-only scenario."""
    scenario, home_note = data.new_scenario(base, exclude)
    root, home, logs = scenario / "data", scenario / "dagster_home", scenario / "logs"
    refresh = [data.BIN / "seg-assets", "refresh", "--engine", engine]
    ms: dict[str, Measurement | None] = dict.fromkeys(SCENARIOS + (LINES_SCENARIOS if clicks else ()))
    runs: dict[str, list[RunTiming]] = {}
    seen: set[str] = set()
    notes: dict[str, str] = {}
    groups: dict[str, str] = {}
    packages = asset_packages()
    base_rows, new_rows = gen["base"]["rows"], gen["followup"]["rows"]

    def pipeline(label: str) -> None:
        ms[label] = _measure(label, refresh, logs, SEG_DATA_DIR=str(root), DAGSTER_HOME=str(home))
        groups.update(groups or asset_groups(root))
        try:
            runs[label] = new_runs(home, seen, groups, packages)
        except Exception as exc:  # keep the wall/CPU/RSS figures even if the run records are unreadable
            notes[label] = f"run records unreadable: {exc}"

    if only & set(PIPELINE):
        pipeline("cold")  # incremental and no-op need the cold state, so cold always runs with them
        _note(notes, "cold", f"{_events(base_rows):,} events" + _lines_note(base_rows))
        if ms["cold"].ok and only & {"incremental", "no-op"}:
            data.link_landing(followup / "landing", root / "landing", exclude=exclude)
            pipeline("incremental")
            _note(notes, "incremental", f"+{_events(new_rows):,} events "
                  f"({_events(new_rows) / max(_events(base_rows), 1):.2%}), +{new_rows.get('customers', 0):,} new users"
                  + _lines_note(new_rows))
        ok = all(m.ok for m in ms.values() if m is not None)
        if clicks is not None and ok and "clicks-only" in only:  # after the incremental delivery, or cold if it did not run
            data.link_landing(clicks / "landing", root / "landing", tables=("clicks",))
            pipeline("clicks-only")
            _note(notes, "clicks-only", f"+{gen['clicks']['rows']['clicks']:,} clicks, nothing else"
                  + ("" if ms["incremental"] else " (right after cold)"))
        if "no-op" in only and all(m.ok for m in ms.values() if m is not None):
            pipeline("no-op")
            _note(notes, "no-op", "nothing new")
    out_dir = scenario / "baselines"
    out_dir.mkdir(exist_ok=True)
    for label, note in (("naive", "pandas + sklearn, base files"), ("floor", "one DuckDB pass, base files")):
        if label in only:
            ms[label] = _measure(label, [sys.executable, data.BENCH_DIR / f"{label}.py", base / "landing",
                                         out_dir / f"{label}.parquet"], logs)
            _note(notes, label, note)
    for label, m in ms.items():
        if m is not None and not m.ok:
            _note(notes, label, f"logs: {m.log_dir}")
    return ms, runs, notes, scenario, home_note


def _code_version() -> str:
    """The pipeline code measured: git HEAD, plus how many pipeline files differ from it (others edit in parallel)."""
    import subprocess

    repo = data.BENCH_DIR.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "seg_assets", "dbt_like_sql"], cwd=repo,
                               capture_output=True, text=True).stdout.splitlines()
    except OSError:
        return "unknown (no git)"
    return f"git {head or '?'}" + (f" + {len(dirty)} uncommitted pipeline file(s)" if dirty else "")


def _events(rows: dict) -> int:
    return rows.get("orders", 0) + rows.get("clicks", 0)


def _lines_note(rows: dict) -> str:
    if "order_items" not in rows:
        return ""
    per = rows["order_items"] / max(rows.get("orders", 0), 1)
    return f", {rows['order_items']:,} order lines ({per:.2f} per order), {rows.get('reviews', 0):,} reviews"


def _note(notes: dict[str, str], label: str, text: str) -> None:
    notes[label] = f"{notes[label]}; {text}" if notes.get(label) else text


def _median_pass(passes: list[tuple]) -> tuple[dict, dict, dict]:
    """Per scenario, the pass with the median wall time (its runs and notes too); all walls in the notes."""
    ms, runs, notes = {}, {}, {}
    for label in report.ROWS:
        if not any(label in p[0] for p in passes):
            continue
        done = [p for p in passes if p[0].get(label) is not None]
        if not done:
            ms[label] = None
            continue
        ranked = sorted(done, key=lambda p: (not p[0][label].ok, p[0][label].wall_s))
        pick = ranked[(len(ranked) - 1) // 2] if all(p[0][label].ok for p in done) else ranked[-1]
        ms[label], notes[label] = pick[0][label], pick[2].get(label, "")
        if label in pick[1]:
            runs[label] = pick[1][label]
        if len(done) > 1:
            _note(notes, label, "median of walls " + "/".join(f"{p[0][label].wall_s:.1f}" for p in done))
    return ms, runs, notes


def run(size: data.Size, seed: int, fmt: str, only: set[str], keep: bool, repeat: int = 1, engine: str = "duckdb",
        lines: bool = False, lines_only: bool = False) -> str:
    machine_info = report.machine()  # load average before we add our own
    _say(f"data for {size.name} ({size.users:,} users, {size.days} days, seed {seed}, {fmt}"
         f"{', order lines and reviews' if lines else ''}) ...")
    base, followup, gen = data.ensure_data(size, seed, fmt, lines)
    for part, info in gen.items():
        _say(f"{part}: {'cached' if info['cached'] else 'generated'} in {info['seconds']}s, rows {info['rows']}")
    passes = []
    for i in range(repeat):
        if repeat > 1:
            _say(f"pass {i + 1}/{repeat}")
        *result, scenario, home_note = one_pass(only, base, followup, gen, engine,
                                                base.parent / "clicks" if lines else None,
                                                ("orders",) if lines_only else ())
        passes.append(result)
        failed = any(m is not None and not m.ok for m in result[0].values())
        if not keep and not failed:
            shutil.rmtree(scenario, ignore_errors=True)  # failures keep their logs and warehouse
        if failed:
            break
    ms, runs, notes = _median_pass(passes)
    machine_info["load average at end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    new_rows = gen["followup"]["rows"]
    params = {"size": f"{size.name}: {size.users:,} users, {size.days} days, seed {seed}, {fmt} files"
                      + (", with order lines and reviews (--lines)" if lines else "")
                      + (": orders delivered as lines only (--lines-only; the orders files are not linked)"
                         if lines_only else ""),
              "base delivery": ", ".join(f"{k} {v:,}" for k, v in gen["base"]["rows"].items()),
              "incremental delivery": f"{size.followup_days} day(s), {size.followup_changed_share:.0%} of users "
                                      f"change type, {size.followup_new_users:,} new users; "
                                      + ", ".join(f"{k} {v:,}" for k, v in new_rows.items()),
              "engine": engine,
              "passes": f"{len(passes)} (each row: the pass with the median wall time)" if len(passes) > 1 else "1",
              "DAGSTER_HOME": home_note,
              "pipeline code": _code_version(),
              "run at": datetime.now().strftime("%Y-%m-%d %H:%M")}
    if lines:
        params["clicks-only delivery"] = (f"{size.followup_days} day(s) after the incremental one, its clicks only: "
                                          f"{gen['clicks']['rows']['clicks']:,} clicks")
    title = (f"seg-assets benchmark: {size.name}" + (" with order lines and reviews" if lines else "")
             + (f" (engine {engine})" if engine != "duckdb" else ""))
    return report.render(title, params, ms, notes, runs, machine_info, ISSUE15 if lines else ())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=list(data.SIZES), default="small")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--format", choices=("parquet", "csv"), default="parquet")
    parser.add_argument("--only", default="", help=f"comma-separated subset of {SCENARIOS + LINES_SCENARIOS} "
                        "(default: all)")
    parser.add_argument("--keep", action="store_true", help="keep the scenario folder (warehouse, logs)")
    parser.add_argument("--repeat", type=int, default=1, help="whole passes; each row reports the median pass")
    parser.add_argument("--engine", choices=("duckdb", "spark"), default="duckdb", help="the refresh's engine")
    parser.add_argument("--lines", action="store_true", help="data with order lines and reviews, the clicks-only "
                        "scenario, and the share of reviews, baskets and recommend in each refresh")
    parser.add_argument("--lines-only", action="store_true", help="--lines, with the orders delivered as lines only "
                        "(the pipeline's scenarios; naive and floor still read the base files)")
    args = parser.parse_args(argv)
    args.lines = args.lines or args.lines_only
    known = SCENARIOS + (LINES_SCENARIOS if args.lines else ())
    only = {s.strip() for s in (args.only or ",".join(known)).split(",") if s.strip()}
    if unknown := only - set(known):
        parser.error(f"unknown scenarios: {sorted(unknown)}" + ("" if args.lines else " (clicks-only needs --lines)"))
    start = time.perf_counter()
    text = run(data.SIZES[args.size], args.seed, args.format, only, args.keep, max(1, args.repeat), args.engine,
               args.lines, args.lines_only)
    OUT.mkdir(exist_ok=True)
    variant = ("-linesonly" if args.lines_only else "-lines" if args.lines else "") + ("-spark" if args.engine == "spark" else "")
    target = OUT / f"{args.size}{variant}-{datetime.now():%Y%m%d-%H%M%S}.md"
    target.write_text(text)
    try:
        from rich.console import Console
        from rich.markdown import Markdown

        Console().print(Markdown(text))
    except ImportError:
        print(text)
    _say(f"report written to {target} (bench took {time.perf_counter() - start:.0f}s)")
    return 0 if "**FAILED**" not in text else 1


if __name__ == "__main__":
    sys.exit(main())
