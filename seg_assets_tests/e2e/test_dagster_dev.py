"""End to end: a real `dagster dev` (webserver + daemon), driven by landing files and the GraphQL API.

Checks what a data engineer relies on when leaving it running: the schedule and sensors are running
by default; a new landing file starts a refresh that succeeds and republishes the BI copy while a BI
reader keeps querying it without errors or partial tables; a drifted delivery leads to a re-fit; and a
run launched over GraphQL succeeds.
"""

import json
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from dagster_graphql import DagsterGraphQLClient

from seg_assets.demo.generate import DEFAULT_END, generate, generate_followup
from seg_assets_tests.e2e.dagster_dev import start_dagster_dev

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

USERS = 3_000
RUNS_QUERY = """
query Runs($sensor: String!) {
  runsOrError(filter: {tags: [{key: "dagster/sensor_name", value: $sensor}]}) {
    ... on Runs { results { runId status } }
  }
}"""
STATES_QUERY = """{ repositoriesOrError { ... on RepositoryConnection { nodes {
  sensors { name sensorState { status } } schedules { name scheduleState { status } } } } } }"""
MODEL_QUERY = """{ assetNodes(assetKeys: [{path: ["segment_model"]}]) {
  assetMaterializations(limit: 10) { runId metadataEntries { label ... on TextMetadataEntry { text }
  ... on BoolMetadataEntry { boolValue } } } } }"""


def deliver(staging: Path, landing: Path) -> list[str]:
    """Move generated files into landing the recommended way: write elsewhere, rename into place."""
    moved = []
    for table_dir in sorted((staging / "landing").iterdir()):
        (landing / table_dir.name).mkdir(parents=True, exist_ok=True)
        for f in sorted(table_dir.iterdir()):
            target = landing / table_dir.name / f.name
            if not target.exists():
                os.replace(f, target)
                moved.append(f"{table_dir.name}/{f.name}")
    return moved


def wait_for_runs(dev, count: int, timeout: float) -> list[dict]:
    """Wait until the landing sensor has launched `count` runs and all of them finished."""
    deadline = time.monotonic() + timeout
    runs = []
    while time.monotonic() < deadline:
        runs = dev.graphql(RUNS_QUERY, {"sensor": "landing_sensor"})["runsOrError"]["results"]
        if len(runs) >= count and all(r["status"] in ("SUCCESS", "FAILURE", "CANCELED") for r in runs):
            return runs
        time.sleep(3)
    raise TimeoutError(f"sensor runs after {timeout}s: {runs}\n{dev.log_tail()}")


def wait_idle(dev, timeout: float = 240) -> None:
    """Wait until no run is queued or in progress (automation may follow a refresh)."""
    q = "{ runsOrError(filter: {statuses: [QUEUED, NOT_STARTED, STARTING, STARTED]}) { ... on Runs { results { runId } } } }"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not dev.graphql(q)["runsOrError"]["results"]:
            return
        time.sleep(3)
    raise TimeoutError(f"runs still in progress after {timeout}s\n{dev.log_tail()}")


def model_fits(dev) -> list[dict]:
    nodes = dev.graphql(MODEL_QUERY)["assetNodes"]
    out = []
    for m in (nodes[0]["assetMaterializations"] if nodes else []):
        entries = {e["label"]: e.get("text", e.get("boolValue")) for e in m["metadataEntries"]}
        if "version" in entries:  # a fit (not a "kept in service" materialization)
            out.append(entries)
    return out


@pytest.fixture()
def dev(tmp_path):
    server = start_dagster_dev(tmp_path)
    try:
        yield server
    finally:
        server.stop()


def test_landing_files_drift_and_graphql_under_dagster_dev(dev, tmp_path):
    states = dev.graphql(STATES_QUERY)["repositoriesOrError"]["nodes"][0]
    assert {s["name"]: s["sensorState"]["status"] for s in states["sensors"]} == {
        "landing_sensor": "RUNNING", "refresh_failure_log": "RUNNING", "segment_automation": "RUNNING",
        "dead_cli_runs": "RUNNING"}
    schedules = {s["name"]: s["scheduleState"]["status"] for s in states["schedules"]}
    assert schedules == {"hourly_refresh": "RUNNING", "daily_rebase": "RUNNING"}

    landing, bi = dev.data_dir / "landing", dev.data_dir / "bi" / "segments.duckdb"
    # 1. First delivery: the sensor starts a refresh that ingests, fits, scores and publishes.
    generate(tmp_path / "batch1", users=USERS, days=60, seed=21)
    assert deliver(tmp_path / "batch1", landing)
    runs = wait_for_runs(dev, 1, timeout=300)
    assert [r["status"] for r in runs] == ["SUCCESS"], dev.log_tail()
    assert bi.exists()
    wait_idle(dev)
    first_fits = model_fits(dev)
    assert len(first_fits) == 1 and first_fits[0]["promoted"] is True

    # 2. A BI reader holds the published file open and queries it while the next refresh runs.
    observations, stop = tmp_path / "reader.jsonl", tmp_path / "reader.stop"
    reader = subprocess.Popen([sys.executable, str(Path(__file__).with_name("bi_reader.py")), str(bi), str(observations), str(stop)])
    try:
        time.sleep(2)
        # A drifted second delivery: half of the users change behaviour and a campaign doubles sign-ups.
        generate_followup(tmp_path / "batch2", users=USERS, days=30, seed=21, start=DEFAULT_END + timedelta(seconds=1),
                          changed_share=0.5, new_users=USERS, tag="drift")
        assert deliver(tmp_path / "batch2", landing)
        runs = wait_for_runs(dev, 2, timeout=300)
        assert [r["status"] for r in runs] == ["SUCCESS", "SUCCESS"], dev.log_tail()
        wait_idle(dev)
        time.sleep(2)
    finally:
        stop.touch()
        reader.wait(timeout=30)
    seen = [json.loads(line) for line in observations.read_text().splitlines()]
    errors = [o for o in seen if "error" in o]
    assert not errors, errors[:3]
    # The README's guarantee: a query sees one publication unless it runs across the switch (its subqueries open
    # their Parquet files one after another). So a mixed snapshot may be seen at a switch, never twice in a row and
    # never lasting: the next query is consistent.
    mixed = [i for i, o in enumerate(seen) if not o["consistent"]]
    assert len(mixed) <= 2 and all(i + 1 < len(seen) and seen[i + 1]["consistent"] for i in mixed), [seen[i] for i in mixed]
    as_ofs = [o["as_of"] for o in seen]
    assert len(seen) > 10 and as_ofs[0] < as_ofs[-1], (as_ofs[0], as_ofs[-1])  # the published as-of advanced
    fits = model_fits(dev)
    assert len(fits) >= 2 and any("drift" in (f.get("trigger") or "") for f in fits), [f.get("trigger") for f in fits]

    # 3. Runs launched through the GraphQL API, two at once (as a person and a script might): both
    #    write the warehouse, and neither fails on DuckDB's lock (the pool and the file lock queue them).
    client = DagsterGraphQLClient("127.0.0.1", port_number=dev.port)
    run_ids = [client.submit_job_execution("refresh"),
               client.submit_job_execution("refresh", run_config={"ops": {"segment_model": {"config": {"fit": "always"}}}})]
    deadline = time.monotonic() + 400
    statuses = {}
    while time.monotonic() < deadline:
        statuses = {r: client.get_run_status(r).value for r in run_ids}
        if all(s in ("SUCCESS", "FAILURE", "CANCELED") for s in statuses.values()):
            break
        time.sleep(3)
    assert list(statuses.values()) == ["SUCCESS", "SUCCESS"], dev.log_tail()
    assert "Could not set lock" not in dev.log.read_text(errors="replace")

