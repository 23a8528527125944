"""`boxbus bench week` at a small scale, as a user runs it: it ends with its figures, and the
aggregates it produced equal the recomputation from the region topics."""

from __future__ import annotations

import json
import subprocess

import pytest

from bus.devstack import StackInfo
from tests.conftest import boxbus_cli

pytestmark = pytest.mark.embedded


def test_the_week_at_a_small_scale_reports_its_figures_and_checks_them(
    stack: StackInfo, env_for_cli: dict[str, str],
) -> None:
    done = subprocess.run([*boxbus_cli(), "bench", "week", "--scale", "0.002", "--json"],
                          env=env_for_cli, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout)
    assert found["aggregates_equal_recomputation"] is True, found["differences"]
    assert found["events"] == found["region_records"] > 8000
    assert found["mix"]["OrderPlaced"] > 1000 and found["copies"] > 0
    for stage in ("publish", "route", "aggregate"):
        assert found[f"{stage}_events_per_s"] > 0
    assert 0 < found["wall_seconds"] < 300
    assert found["latency_p50_ms"] <= found["latency_p99_ms"]
    assert set(found["processes"]) >= {"router", "aggregator-1", "bench (publish)", "kafka-1",
                                       "postgres"}
    assert all(p["cpu_seconds"] >= 0 for p in found["processes"].values())
    assert found["router"]["consumed"] == found["events"]
    assert sum(a["consumed"] for a in found["aggregators"]) == found["region_records"]
