"""The benchmark harness's own parts (fast): the process-tree sampler, the report, the naive and floor scripts.

``make bench`` itself is not part of CI; these tests make sure that the figures it prints are measured
the way the README says (tree RSS, CPU of descendants, failures reported) and that both baselines
produce one row per user.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import polars as pl
import pytest

from bench import report
from bench.measure import MIB, Measurement, run_measured, tree_pids
from bench.timings import RunTiming, StepTiming
from seg_assets.demo.generate import generate

BENCH = Path(__file__).resolve().parent.parent / "bench"

ALLOC = "import time; b = bytearray({mib} * 1024 * 1024); b[::4096] = b'x' * len(b[::4096]); time.sleep({sleep})"


def test_sampler_sums_rss_over_the_process_tree(tmp_path):
    # the parent holds 120 MiB while its child holds 200 MiB: a per-process maximum would say 200
    child = ALLOC.format(mib=200, sleep=0.8)
    parent = textwrap.dedent(f"""
        import subprocess, sys
        {ALLOC.format(mib=120, sleep=0)}
        subprocess.run([sys.executable, "-c", {child!r}], check=True)
    """)
    m = run_measured([sys.executable, "-c", parent], "tree", log_dir=tmp_path)
    assert m.ok and m.returncode == 0
    assert m.peak_rss >= 320 * MIB, m.peak_rss / MIB
    assert m.peak_rss < 1024 * MIB
    assert m.wall_s >= 0.8 and m.extra["rss_samples"] >= 5


def test_cpu_time_includes_children(tmp_path):
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.6: pass"
    parent = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {burn!r}], check=True)"
    m = run_measured([sys.executable, "-c", parent], "cpu", log_dir=tmp_path)
    assert m.ok and m.cpu_s >= 0.6


def test_failure_is_reported_with_stderr_tail(tmp_path):
    m = run_measured([sys.executable, "-c", "import sys; print('boom: no landing files', file=sys.stderr); sys.exit(3)"],
                     "fails", log_dir=tmp_path)
    assert not m.ok and m.returncode == 3
    assert "boom: no landing files" in m.stderr_tail
    text = report.results_table({"cold": m})
    assert "**FAILED** (exit 3)" in text


def test_tree_pids_includes_self():
    import os

    assert os.getpid() in tree_pids(os.getpid())


def _m(label: str, wall: float, cpu: float | None = None, rss_mib: float = 100, rc: int = 0) -> Measurement:
    return Measurement(label, [label], rc, wall, cpu if cpu is not None else wall, int(rss_mib * MIB))


def test_report_ratios_and_targets():
    ms = {"cold": _m("cold", 60, rss_mib=2000), "incremental": _m("incremental", 3, rss_mib=900),
          "no-op": _m("no-op", 4), "naive": _m("naive", 120, rss_mib=4600), "floor": _m("floor", 10)}
    got = {name: wall for name, wall, _, _ in report.ratios(ms)}
    assert got["cold / naive"] == pytest.approx(0.5)
    assert got["cold / floor"] == pytest.approx(6.0)
    assert got["incremental / cold"] == pytest.approx(0.05)
    assert got["incremental / naive"] == pytest.approx(0.025)
    table = report.ratios_table(ms)
    assert "| cold / naive | 0.50 |" in table and "| incremental / cold | 0.050 |" in table
    assert all(ok for _, _, ok in report.targets(ms))
    ms["no-op"] = _m("no-op", 7)
    ms["cold"] = _m("cold", 60, rss_mib=3500)
    marks = {t: ok for t, _, ok in report.targets(ms)}
    assert marks["no-op < 5 s (wall)"] is False and marks["pipeline peak RSS <= 2.5 GiB"] is False
    ms["naive"] = _m("naive", 1, rc=1)  # a failed baseline gives no ratio instead of a wrong one
    assert report.ratio(ms["cold"], ms["naive"]) is None
    assert "n/a" in report.ratios_table(ms)


def test_report_renders_steps_and_failures():
    runs = [RunTiming("r1", "ingest", "SUCCESS", 5.0,
                      [StepTiming("ingest_landing", 4.0, "SUCCESS", ["raw/orders", "raw/clicks"], 100.0, 104.0)])]
    ms = {"cold": _m("cold", 8.0), "naive": _m("naive", 2.0, rc=1)}
    # the sampled RSS timeline gives each step its own peak: 300 MiB inside [100, 104], 900 MiB after it
    ms["cold"].timeline = [(99.0, 50 * MIB), (101.0, 300 * MIB), (103.0, 200 * MIB), (105.0, 900 * MIB)]
    text = report.render("t", {"size": "tiny"}, ms, {}, {"cold": runs}, {"cores (nproc)": "2"})
    assert "| ingest | ingest_landing | raw/orders, raw/clicks | 4.00 | 300 | SUCCESS |" in text
    assert "_outside runs (imports, definitions, CLI summary)_ | | 3.00 | | |" in text
    assert "## Failures" in text and "### naive (exit 1)" in text
    assert "| incremental | skipped |" in text


@pytest.fixture(scope="module")
def tiny_landing(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bench-tiny")
    generate(root, users=300, days=30, seed=5)
    return root / "landing"


def _users(landing: Path) -> set[str]:
    ids = [pl.read_parquet(p, columns=["user_id"])["user_id"] for t in ("orders", "clicks")
           for p in (landing / t).glob("*.parquet")]
    return set(pl.concat(ids).to_list())


@pytest.mark.parametrize("script", ["naive.py", "floor.py"])
def test_baseline_writes_one_row_per_user(tiny_landing, tmp_path, script):
    out = tmp_path / "out.parquet"
    proc = subprocess.run([sys.executable, str(BENCH / script), str(tiny_landing), str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = pl.read_parquet(out)
    assert table["user_id"].n_unique() == table.height
    assert set(table["user_id"].to_list()) == _users(tiny_landing)
    if script == "naive.py":
        assert table["segment"].n_unique() == 6
        assert {"recency_days", "frequency", "monetary", "predicted_segment"} <= set(table.columns)
        assert table.select(pl.all().is_null().sum()).sum_horizontal().item() == 0


def test_share_of_packages_in_each_refresh():
    # issue 15: the steps of reviews, baskets and recommend, summed per refresh, over the refresh's wall
    def step(name, secs, package):
        return StepTiming(name, secs, "SUCCESS", [], package=package)

    runs = {"cold": [RunTiming("r1", "all", "SUCCESS", 90.0, [step("ingest_landing", 50.0, "ingest"),
                                                              step("analytics__review_sentiment", 6.0, "reviews"),
                                                              step("basket_rules", 4.0, "baskets"),
                                                              step("analytics__user_recommendations", 10.0, "recommend")])],
            "clicks-only": [RunTiming("r2", "all", "SUCCESS", 9.0, [step("ingest_landing", 8.0, "ingest"),
                                                                    step("basket_rules", 0.5, "baskets")])]}
    ms = {"cold": _m("cold", 100.0), "clicks-only": _m("clicks-only", 10.0), "naive": _m("naive", 2.0)}
    assert report.package_seconds(runs["cold"], ("reviews", "baskets")) == {"reviews": 6.0, "baskets": 4.0}
    table = report.share_table(ms, runs, ("reviews", "baskets", "recommend"))
    assert "| cold | wall | 100.0 | 6.00 | 4.00 | 10.00 | 20.00 | 20.0% | 25.0% |" in table
    assert "| clicks-only | wall | 10.0 | 0.00 | 0.50 | 0.00 | 0.50 | 5.0% | 5.3% |" in table
    text = report.render("t", {}, ms, {}, runs, {}, ("reviews", "baskets", "recommend"))
    assert "## Share of reviews, baskets, recommend" in text and "| clicks-only | ok |" in text
    assert "## Share of" not in report.render("t", {}, {"cold": ms["cold"]}, {}, runs, {})
    assert "clicks-only" not in report.results_table({"cold": ms["cold"]})  # only shown when measured


def test_packages_name_where_each_asset_is_defined():
    from bench.timings import asset_packages, step_stage

    packages = asset_packages()
    assert packages["analytics/review_sentiment"] == "reviews"  # in group features, defined in seg_assets/reviews
    assert packages["analytics/user_recommendations"] == "recommend"
    assert step_stage("basket_rules", ["analytics/basket_rules", "analytics/segment_basket_rules"], packages) == "baskets"
    assert step_stage("analytics__review_sentiment", [], packages) == "reviews"


def test_lines_variant_is_cached_apart_and_clicks_only_links_clicks(tmp_path):
    from bench import data

    size = data.SIZES["small"]
    assert data.data_root(size, 1, "parquet") != data.data_root(size, 1, "parquet", lines=True)
    assert data.data_root(size, 1, "parquet").name == f"seed1-parquet-{data.DATA_VERSION}"  # the default data as it was
    src = tmp_path / "src"
    for table in ("clicks", "orders", "order_items"):
        (src / table).mkdir(parents=True)
        (src / table / f"{table}_1.parquet").write_bytes(b"x")
    assert data.link_landing(src, tmp_path / "dst", tables=("clicks",)) == 1
    assert [p.name for p in (tmp_path / "dst").iterdir()] == ["clicks"]
    assert data.link_landing(src, tmp_path / "lines_only", exclude=("orders",)) == 2  # --lines-only
    assert sorted(p.name for p in (tmp_path / "lines_only").iterdir()) == ["clicks", "order_items"]


def test_cpu_per_step_from_the_sampled_cpu_of_the_tree(tmp_path):
    m = _m("cold", 10.0, cpu=6.0)
    m.cpu_timeline = [(100.0, 1.0), (102.0, 2.0), (104.0, 5.0), (106.0, 6.0)]
    assert m.cpu_between(101.0, 105.0) == pytest.approx(5.5 - 1.5)  # interpolated between samples
    assert m.cpu_between(99.0, 100.5) == pytest.approx(0.25)
    runs = {"cold": [RunTiming("r1", "all", "SUCCESS", 9.0, [
        StepTiming("analytics__review_sentiment", 4.0, "SUCCESS", [], 100.0, 104.0, package="reviews")])]}
    assert report.package_seconds(runs["cold"], ("reviews",), m) == {"reviews": pytest.approx(4.0)}
    assert "| cold | CPU | 6.0 | 4.00 | 4.00 | 66.7% | 200.0% |" in report.share_table({"cold": m}, runs, ("reviews",))
    # and the sampler records it: a child burning 0.5 s of CPU shows up in the timeline
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.5: pass\ntime.sleep(0.2)"
    real = run_measured([sys.executable, "-c", burn], "burn", log_dir=tmp_path)
    assert real.cpu_timeline and real.cpu_between(real.cpu_timeline[0][0], real.cpu_timeline[-1][0]) >= 0.35
