"""A real ``dagster dev`` (webserver + daemon) for end-to-end tests, driven over GraphQL.

Started in its own process group (``dagster dev`` may not pass SIGTERM on to its children) in a
temporary DAGSTER_HOME and SEG_DATA_DIR, on a free port, and always killed as a group.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from seg_assets.automation.instance import write_dagster_yaml

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class DagsterDev:
    process: subprocess.Popen
    port: int
    home: Path
    data_dir: Path
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/graphql"

    def graphql(self, query: str, variables: dict | None = None, timeout: float = 60) -> dict:
        response = requests.post(self.url, json={"query": query, "variables": variables or {}}, timeout=timeout)
        response.raise_for_status()
        body = response.json()
        if body.get("errors"):
            raise RuntimeError(f"GraphQL errors: {body['errors']}")
        return body["data"]

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=20)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                try:
                    os.killpg(self.process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.process.wait(timeout=10)


def start_dagster_dev(tmp: Path, env_extra: dict | None = None, ready_timeout: float = 180) -> DagsterDev:
    home, data_dir = tmp / "dagster_home", tmp / "data"
    write_dagster_yaml(home)
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {**os.environ, "DAGSTER_HOME": str(home), "SEG_DATA_DIR": str(data_dir), **(env_extra or {})}
    log = tmp / "dagster_dev.log"
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("dagster")), "dev", "-w", str(REPO / "workspace.yaml"),
         "-p", str(port), "-h", "127.0.0.1"],
        cwd=tmp, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    dev = DagsterDev(process, port, home, data_dir, log)
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"dagster dev exited early:\n{dev.log_tail()}")
        try:
            data = dev.graphql("{ workspaceOrError { __typename ... on Workspace { locationEntries { name "
                               "locationOrLoadError { __typename ... on PythonError { message } } } } } }", timeout=5)
            entries = data["workspaceOrError"]["locationEntries"]
            states = [e["locationOrLoadError"] for e in entries if e["locationOrLoadError"]]
            if states and all(s["__typename"] == "RepositoryLocation" for s in states):
                return dev
            if any(s["__typename"] == "PythonError" for s in states):
                dev.stop()
                raise RuntimeError(f"code location failed to load: {states}")
        except (requests.RequestException, KeyError):
            pass
        time.sleep(2)
    dev.stop()
    raise TimeoutError(f"dagster dev not ready after {ready_timeout}s:\n{dev.log_tail()}")
