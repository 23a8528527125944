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
         "--rate", "400", "--seconds", "1", "--json"],
        env=env_for_cli, capture_output=True, text=True, timeout=240, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(result.stdout)
    for key in ("relay_events_per_s", "raw_produce_events_per_s", "inbox_events_per_s",
                "per_event_txn_events_per_s", "e2e_p50_ms", "e2e_p99_ms"):
        assert figures[key] > 0, key
    assert figures["e2e_events"] == 400


def test_bench_outbox_refuses_an_unknown_part() -> None:
    result = subprocess.run([*boxbus_cli(), "bench", "outbox", "--only", "relays"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    text = " ".join(result.stderr.replace("│", " ").split())  # rich wraps it in a box
    assert "--only: unknown part(s) ['relays']; choose from relay, inbox, e2e" in text
