"""What the benchmarks read of a process in /proc, and bench scale's wait for the broker's
file descriptors."""

from __future__ import annotations

import asyncio
import os
import tempfile

import pytest

from processors.procstat import open_files
from processors.router import scale


def test_open_files_counts_what_a_process_holds_against_its_limit() -> None:
    found = open_files(os.getpid())
    assert found is not None
    held, limit = found
    with tempfile.TemporaryFile() as a, tempfile.TemporaryFile() as b:
        assert a and b
        more = open_files(os.getpid())
        assert more is not None and more[0] == held + 2
    assert 0 < held < limit


def test_open_files_of_a_process_that_is_gone_is_none() -> None:
    assert open_files(2**22 + 12345) is None


async def test_room_for_waits_until_the_broker_closed_deleted_topics(
        monkeypatch: pytest.MonkeyPatch) -> None:
    held = iter([19_000, 12_000, 5_000])
    monkeypatch.setattr(scale, "open_files", lambda pid: (next(held), 20_000))
    waits: list[str] = []

    async def no_sleep(seconds: float) -> None:
        pass

    monkeypatch.setattr(asyncio, "sleep", no_sleep)
    await scale.room_for(1, 10_087, waits.append)
    assert len(waits) == 2 and "19000 of 20000" in waits[0]


async def test_room_for_a_network_larger_than_the_limit_is_refused_at_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scale, "open_files", lambda pid: (100, 20_000))
    with pytest.raises(RuntimeError, match=r"needs about 25000 more.*ulimit -n"):
        await scale.room_for(1, 25_000, lambda _: None)


async def test_room_for_a_broker_elsewhere_is_not_checked() -> None:
    await scale.room_for(None, 10**9, lambda _: None)
