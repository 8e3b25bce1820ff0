"""Measure a command the way a user experiences it: wall time, CPU time and peak RSS of its process tree.

psutil is not installed in the project's environment, so the sampler reads ``/proc`` directly (Linux).
Peak RSS is the largest *sum* of RSS over the process and all its descendants seen by a sampler thread
(every ~50 ms), because the pipeline, DuckDB threads and any worker processes compete for the same RAM.
CPU time comes from ``os.wait4`` on the child: user + sys of the child and every descendant it waited for.
The kernel's ``ru_maxrss`` is not used: after vfork+exec it holds the *parent's* high-water RSS (the
harness's), which inflated small commands by hundreds of MiB in a first version.
"""

from __future__ import annotations

import bisect
import os
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

PAGE = os.sysconf("SC_PAGE_SIZE")
MIB = 1024 * 1024


def _children_of(pid: int) -> list[int]:
    """Direct children via /proc/<pid>/task/*/children (cheap), or a /proc scan if the kernel lacks it."""
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    try:
        for tid in tasks:
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                out += [int(c) for c in fh.read().split()]
        return out
    except FileNotFoundError:
        return [child for child, parent in _ppid_map().items() if parent == pid]
    except OSError:
        return out


def _ppid_map() -> dict[int, int]:
    pids = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as fh:
                    stat = fh.read()
            except OSError:
                continue
            pids[int(name)] = int(stat[stat.rindex(")") + 2:].split()[1])
    return pids


def tree_pids(root: int) -> list[int]:
    """The process and all its live descendants."""
    seen, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.append(pid)
        todo += _children_of(pid)
    return seen


def rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as fh:
            return int(fh.read().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0  # the process ended between listing and reading


def tree_rss(root: int) -> int:
    return sum(rss_bytes(pid) for pid in tree_pids(root))


TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a live process (all its threads), from /proc/<pid>/stat."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime: fields 14 and 15 of stat
    except (OSError, IndexError, ValueError):
        return 0.0


def tree_cpu(root: int) -> float:
    return sum(cpu_seconds(pid) for pid in tree_pids(root))


class PeakSampler(threading.Thread):
    """Samples the summed RSS of a process tree until stopped; ``peak`` is the largest sum seen."""

    def __init__(self, pid: int, interval: float = 0.05):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak = 0
        self.timeline: list[tuple[float, int]] = []  # (epoch seconds, bytes): lets the report peak per step
        # (epoch seconds, CPU seconds of the live tree): CPU per step, which a busy machine does not inflate as it
        # does wall time (a niced refresh waits for the CPU while its step clocks run)
        self.cpu_timeline: list[tuple[float, float]] = []
        self._stop_event = threading.Event()

    @property
    def samples(self) -> int:
        return len(self.timeline)

    def run(self) -> None:
        while not self._stop_event.is_set():
            rss = tree_rss(self.pid)
            self.peak = max(self.peak, rss)
            now = time.time()
            self.timeline.append((now, rss))
            self.cpu_timeline.append((now, tree_cpu(self.pid)))
            self._stop_event.wait(self.interval)

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        return self.peak


@dataclass
class Measurement:
    """One measured command. ``ok`` is False when it exited non-zero (the report marks it FAILED)."""

    label: str
    cmd: list[str]
    returncode: int
    wall_s: float
    cpu_s: float
    peak_rss: int  # bytes, summed over the tree (sampled)
    stderr_tail: str = ""
    log_dir: str = ""
    extra: dict = field(default_factory=dict)
    timeline: list[tuple[float, int]] = field(default_factory=list, repr=False)
    cpu_timeline: list[tuple[float, float]] = field(default_factory=list, repr=False)

    def peak_between(self, start: float, end: float) -> int | None:
        """Peak tree RSS (bytes) sampled in [start, end] (epoch seconds), e.g. during one Dagster step."""
        inside = [rss for t, rss in self.timeline if start <= t <= end]
        return max(inside) if inside else None

    def cpu_at(self, when: float) -> float | None:
        """CPU seconds of the tree at ``when`` (epoch seconds), interpolated between the samples around it."""
        line = self.cpu_timeline
        if not line:
            return None
        after = bisect.bisect_left(line, (when, float("-inf")))
        if after == 0 or after == len(line):
            return line[min(after, len(line) - 1)][1]
        (t0, c0), (t1, c1) = line[after - 1], line[after]
        return c0 + (c1 - c0) * (when - t0) / (t1 - t0) if t1 > t0 else c1

    def cpu_between(self, start: float, end: float) -> float | None:
        """CPU seconds the tree used in [start, end] (epoch seconds), e.g. during one Dagster step."""
        a, b = self.cpu_at(start), self.cpu_at(end)
        return None if a is None or b is None else max(b - a, 0.0)

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def peak_rss_mib(self) -> float:
        return self.peak_rss / MIB


def _tail(path: Path, lines: int) -> str:
    try:
        with open(path, errors="replace") as fh:
            return "".join(deque(fh, maxlen=lines)).rstrip()
    except OSError:
        return ""


def run_measured(cmd: list[str], label: str, *, env: dict | None = None, cwd: str | Path | None = None,
                 log_dir: str | Path | None = None, interval: float = 0.05, tail_lines: int = 25) -> Measurement:
    """Run ``cmd`` to completion (stdout/stderr to files in ``log_dir``) and measure it."""
    log = Path(log_dir) if log_dir else Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-{os.getpid()}"
    log.mkdir(parents=True, exist_ok=True)
    out_path, err_path = log / f"{label}.stdout", log / f"{label}.stderr"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        sampler = PeakSampler(proc.pid, interval)
        sampler.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            proc.kill()
            proc.wait()
            sampler.stop()
            raise
        wall = time.perf_counter() - start
        peak = sampler.stop()
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4: tell Popen
    tail = "" if proc.returncode == 0 else (_tail(err_path, tail_lines) or _tail(out_path, tail_lines))
    return Measurement(label, [str(c) for c in cmd], proc.returncode, wall, usage.ru_utime + usage.ru_stime,
                       peak, tail, str(log), {"rss_samples": sampler.samples}, sampler.timeline, sampler.cpu_timeline)
