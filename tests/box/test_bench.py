"""The benchmark command keeps working (figures are read in the issue notes, not asserted)."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import boxbus_cli

pytestmark = [pytest.mark.stack, pytest.mark.embedded]


def test_bench_outbox_prints_every_figure(env_for_cli: dict[str, str]) -> None:
    result = subprocess.run(
        [*boxbus_cli(), "bench", "outbox", "--events", "400", "--per-event", "100",
         "--rate", "200,400", "--seconds", "1", "--json"],
        env=env_for_cli, capture_output=True, text=True, timeout=240, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(result.stdout)
    for key in ("relay_events_per_s", "raw_produce_events_per_s", "inbox_events_per_s",
                "per_event_txn_events_per_s", "e2e_p50_ms", "e2e_p99_ms"):
        assert figures[key] > 0, key
    assert figures["e2e_events"] == 400  # the top-level figures are the highest rate's
    assert [r["rate"] for r in figures["e2e_by_rate"]] == [200, 400]
    assert all(r["p99_ms"] >= r["p50_ms"] > 0 for r in figures["e2e_by_rate"])


def test_bench_outbox_refuses_a_rate_that_is_not_one() -> None:
    result = subprocess.run([*boxbus_cli(), "bench", "outbox", "--rate", "1000,fast"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    text = " ".join(result.stderr.replace("│", " ").split())
    assert "'1000,fast' is not a comma-separated list of events/s" in text


def test_bench_outbox_refuses_an_unknown_part() -> None:
    result = subprocess.run([*boxbus_cli(), "bench", "outbox", "--only", "relays"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    text = " ".join(result.stderr.replace("│", " ").split())  # rich wraps it in a box
    assert "--only: unknown part(s) ['relays']; choose from relay, inbox, e2e" in text
