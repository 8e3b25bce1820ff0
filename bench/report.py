"""The benchmark report as markdown: results, ratios, targets, per-asset timings, and the machine.

Pure functions of the measurements (no I/O except reading /proc for the machine), so they are unit-tested.
"""

from __future__ import annotations

import os
import platform
from importlib import metadata

from bench.measure import MIB, Measurement
from bench.timings import RunTiming

ROWS = ("cold", "incremental", "clicks-only", "no-op", "naive", "floor")
PIPELINE = ("cold", "incremental", "clicks-only", "no-op")
OPTIONAL = ("clicks-only",)  # rows shown only when measured (``bench/run.py --lines``)
GIB = 1024 * MIB


def _ok(m: Measurement | None) -> bool:
    return m is not None and m.ok


def ratio(a: Measurement | None, b: Measurement | None, attr: str = "wall_s") -> float | None:
    if not (_ok(a) and _ok(b)) or getattr(b, attr) <= 0:
        return None
    return getattr(a, attr) / getattr(b, attr)


def _fmt_ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}" if value >= 0.1 else f"{value:.3f}"


def results_table(ms: dict[str, Measurement | None], notes: dict[str, str] | None = None) -> str:
    lines = ["| scenario | status | wall s | CPU s | peak RSS MiB | notes |", "|---|---|---:|---:|---:|---|"]
    for name in ROWS:
        if name in OPTIONAL and name not in ms:
            continue
        m = ms.get(name)
        note = (notes or {}).get(name, "")
        if m is None:
            lines.append(f"| {name} | skipped | | | | {note} |")
        else:
            status = "ok" if m.ok else f"**FAILED** (exit {m.returncode})"
            lines.append(f"| {name} | {status} | {m.wall_s:.1f} | {m.cpu_s:.1f} | {m.peak_rss_mib:,.0f} | {note} |")
    return "\n".join(lines)


def ratios(ms: dict[str, Measurement | None]) -> list[tuple[str, float | None, float | None, float | None]]:
    """(name, wall ratio, CPU ratio, peak RSS ratio) for the ratios the issue asks for."""
    pairs = [("cold / naive", "cold", "naive"), ("cold / floor", "cold", "floor"),
             ("incremental / cold", "incremental", "cold"), ("incremental / naive", "incremental", "naive"),
             ("no-op / cold", "no-op", "cold")]
    return [(name, ratio(ms.get(a), ms.get(b)), ratio(ms.get(a), ms.get(b), "cpu_s"),
             ratio(ms.get(a), ms.get(b), "peak_rss")) for name, a, b in pairs]


def ratios_table(ms: dict[str, Measurement | None]) -> str:
    lines = ["| ratio | wall | CPU | peak RSS |", "|---|---:|---:|---:|"]
    lines += [f"| {n} | {_fmt_ratio(w)} | {_fmt_ratio(c)} | {_fmt_ratio(r)} |" for n, w, c, r in ratios(ms)]
    return "\n".join(lines)


def targets(ms: dict[str, Measurement | None]) -> list[tuple[str, str, bool | None]]:
    """The leaner-core issue's acceptance at size large, then its stretch goals: (target, measured, holds?);
    None = not measurable. Ratios are against the naive script of the same run."""
    cold, incr, noop, naive = (ms.get(k) for k in ("cold", "incremental", "no-op", "naive"))
    runs = [m for k in PIPELINE if _ok(m := ms.get(k))]
    peak = max((m.peak_rss_mib for m in runs), default=None)
    rc, ri = ratio(cold, naive), ratio(incr, naive)
    return [
        ("cold <= 1.0 x naive (wall)", _fmt_ratio(rc), None if rc is None else rc <= 1.0),
        ("incremental <= 0.15 x naive (wall)", _fmt_ratio(ri), None if ri is None else ri <= 0.15),
        ("pipeline peak RSS <= 2.5 GiB", "n/a" if peak is None else f"{peak:,.0f} MiB",
         None if peak is None else peak * MIB <= 2.5 * GIB),
        ("no-op < 5 s (wall)", f"{noop.wall_s:.1f} s" if _ok(noop) else "n/a", noop.wall_s < 5.0 if _ok(noop) else None),
        ("stretch: cold <= 0.5 x naive", _fmt_ratio(rc), None if rc is None else rc <= 0.5),
        ("stretch: incremental <= 0.10 x naive", _fmt_ratio(ri), None if ri is None else ri <= 0.10),
    ]


def targets_table(ms: dict[str, Measurement | None]) -> str:
    mark = {True: "holds", False: "**misses**", None: "n/a"}
    lines = ["| target (set for size large) | measured | |", "|---|---:|---|"]
    lines += [f"| {t} | {v} | {mark[ok]} |" for t, v, ok in targets(ms)]
    return "\n".join(lines)


def steps_table(label: str, runs: list[RunTiming], m: Measurement | None) -> str:
    """Per-step (asset / multi-asset / check) timings of one refresh, plus what lies outside the runs."""
    if not runs:
        return f"_{label}: no Dagster runs recorded._"
    lines = [f"| {label}: stage | step | assets | s | peak RSS MiB | status |", "|---|---|---|---:|---:|---|"]

    def peak(start, end) -> str:
        value = m.peak_between(start, end) if m is not None and start and end else None
        return "" if value is None else f"{value / MIB:,.0f}"

    for run in runs:
        for s in run.steps:
            assets = ", ".join(s.assets[:4]) + (f" (+{len(s.assets) - 4})" if len(s.assets) > 4 else "")
            secs = "" if s.seconds is None else f"{s.seconds:.2f}"
            lines.append(f"| {s.stage or run.stage} | {s.step} | {assets} | {secs} | {peak(s.start, s.end)} | {s.status} |")
        total = "" if run.seconds is None else f"{run.seconds:.2f}"
        lines.append(f"| {'all' if '+' in run.stage else run.stage} | _whole run_ | | {total} | | {run.status} |")
    in_runs = sum(r.seconds or 0 for r in runs)
    if m is not None:
        lines.append(f"| | _outside runs (imports, definitions, CLI summary)_ | | {m.wall_s - in_runs:.2f} | | |")
    return "\n".join(lines)


def package_seconds(runs: list[RunTiming], packages: tuple[str, ...], m: Measurement | None = None) -> dict[str, float]:
    """Step seconds per package (``StepTiming.package``) of ``packages``, over the runs of one refresh; with ``m``,
    the CPU seconds the measured process used during those steps instead (None when a step had too few samples)."""
    out: dict[str, float | None] = dict.fromkeys(packages, 0.0)
    for run in runs:
        for s in run.steps:
            if s.package in out and s.seconds is not None and out[s.package] is not None:
                secs = s.seconds if m is None else m.cpu_between(s.start, s.end) if s.start and s.end else None
                out[s.package] = None if secs is None else out[s.package] + secs
    return out


def share_table(ms: dict[str, Measurement | None], runs: dict[str, list[RunTiming]], packages: tuple[str, ...]) -> str:
    """Per pipeline scenario: the step seconds of ``packages`` and their share of the refresh, in wall time and
    in CPU time (a shared machine stretches wall time, CPU much less).

    "adds" is their seconds over the rest of the refresh (the refresh minus them): what they add to a refresh
    without them."""
    head = " | ".join(f"{p} s" for p in packages)
    lines = [f"| scenario | clock | refresh s | {head} | together s | share | adds |",
             "|---|---|---:|" + "---:|" * len(packages) + "---:|---:|---:|"]
    for name in PIPELINE:
        m = ms.get(name)
        if name not in runs or not _ok(m):
            continue
        for clock, whole, secs in (("wall", m.wall_s, package_seconds(runs[name], packages)),
                                   ("CPU", m.cpu_s, package_seconds(runs[name], packages, m))):
            if any(v is None for v in secs.values()):
                lines.append(f"| {name} | {clock} | {whole:.1f} | " + " | ".join("n/a" for _ in packages) + " | | | |")
                continue
            total = sum(secs.values())
            rest = whole - total
            adds = f"{total / rest:.1%}" if rest > 0 else "n/a"
            cells = " | ".join(f"{secs[p]:.2f}" for p in packages)
            share = f"{total / whole:.1%}" if whole > 0 else "n/a"
            lines.append(f"| {name} | {clock} | {whole:.1f} | {cells} | {total:.2f} | {share} | {adds} |")
    return "\n".join(lines)


def machine() -> dict[str, str]:
    """What the figures depend on: cores, RAM, CPU model, load at start, library versions."""
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), cpu)
    except OSError:
        pass
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB
    info = {"cores (nproc)": str(os.cpu_count()), "RAM": f"{ram:.1f} GiB", "CPU": cpu,
            "OS": f"{platform.system()} {platform.release()}", "Python": platform.python_version(),
            "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg())}
    for pkg in ("dagster", "duckdb", "polars", "pandas", "scikit-learn", "pyarrow"):
        try:
            info[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return info


def render(title: str, params: dict[str, str], ms: dict[str, Measurement | None], notes: dict[str, str],
           runs: dict[str, list[RunTiming]], machine_info: dict[str, str], packages: tuple[str, ...] = ()) -> str:
    """The report; ``packages``: also the share of each refresh taken by the steps of these pipeline packages."""
    parts = [f"# {title}", "", *(f"- {k}: {v}" for k, v in params.items()), "",
             "## Results", "", results_table(ms, notes), "", "## Ratios", "", ratios_table(ms), "",
             "## Targets", "", targets_table(ms), ""]
    if packages:
        parts += [f"## Share of {', '.join(packages)} (their step seconds in each refresh)", "",
                  share_table(ms, runs, packages), ""]
    failed = [(k, m) for k, m in ms.items() if m is not None and not m.ok]
    if failed:
        parts += ["## Failures", ""]
        for name, m in failed:
            parts += [f"### {name} (exit {m.returncode}): `{' '.join(m.cmd)}`", "", "```",
                      m.stderr_tail or "(no output)", "```", f"Logs: {m.log_dir}", ""]
    parts += ["## Time per asset (Dagster step records)", ""]
    for name in PIPELINE:
        if name in runs:
            parts += [steps_table(name, runs[name], ms.get(name)), ""]
    parts += ["## Machine", "", *(f"- {k}: {v}" for k, v in machine_info.items()), ""]
    return "\n".join(parts)
