from __future__ import annotations

import json

import pytest

from bus import LogFormat, configure_logging, get_logger


def test_json_logs_carry_bound_context(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(LogFormat.JSON, "INFO")
    get_logger("boxbus.test", correlation_id="corr-1").info("event applied", event_id="ev-9")
    line = capsys.readouterr().err.strip().splitlines()[-1]
    record = json.loads(line)
    assert record["event"] == "event applied"
    assert record["event_id"] == "ev-9" and record["correlation_id"] == "corr-1"
    assert record["level"] == "info" and "timestamp" in record


def test_console_logs_are_readable(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(LogFormat.CONSOLE, "WARNING")
    log = get_logger("boxbus.test")
    log.info("hidden")
    log.warning("shown", box="north")
    err = capsys.readouterr().err
    assert "hidden" not in err
    assert "shown" in err and "box=north" in err
