"""`boxbus bench rpc` runs end to end on the real stack and reports its keys (a short run: the
figures themselves are for the benchmark, not for a test)."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import boxbus_cli

pytestmark = pytest.mark.stack


def test_bench_rpc_reports_latency_and_timeouts(env_for_cli: dict[str, str]) -> None:
    done = subprocess.run([*boxbus_cli(), "bench", "rpc", "--requests", "40", "--rate", "40",
                           "--json"], env=env_for_cli, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout)
    assert found["rpc_answered"] == 40 and found["rpc_timeouts"] == 0
    assert 0 < found["rpc_p50_ms"] <= found["rpc_p99_ms"] <= found["rpc_max_ms"]
