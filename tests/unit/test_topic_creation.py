"""Topics are created in batches, each waited for until its partitions have leaders; a wait
that runs out names a few of the topics and how many (an admin stand-in, no broker)."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka.admin import NewTopic

from bus.errors import ComponentFailed
from bus.topics import CREATE_BATCH, _wait_for_leaders, create_topics


class Admin:
    """What create_topics uses of an AIOKafkaAdminClient."""

    def __init__(self, leaderless: set[str] | None = None) -> None:
        self.batches: list[list[str]] = []
        self.asked: list[list[str]] = []
        self.leaderless = set(leaderless or ())
        self.created: set[str] = set()

    async def create_topics(self, new: list[NewTopic], timeout_ms: int = 0) -> None:
        self.batches.append([t.name for t in new])
        self.created |= {t.name for t in new}

    async def describe_topics(self, names: list[str]) -> list[dict[str, Any]]:
        self.asked.append(list(names))
        described = [{"topic": n, "error_code": 0,
                      "partitions": [{"leader": -1 if n in self.leaderless else 1}]}
                     for n in names if n in self.created]
        self.leaderless -= {n for n in names if n.endswith("-slow")}  # ready next time
        return described


async def test_topics_are_created_in_batches_each_waited_for() -> None:
    admin = Admin(leaderless={"t0003-slow"})
    names = [f"t{n:04d}" + ("-slow" if n == 3 else "") for n in range(2 * CREATE_BATCH + 7)]
    await create_topics(admin, [NewTopic(n, 1, 1) for n in names])
    assert [len(b) for b in admin.batches] == [CREATE_BATCH, CREATE_BATCH, 7]
    assert [n for batch in admin.batches for n in batch] == names
    # The first batch was asked about again for the one topic still without a leader only.
    assert admin.asked[1] == ["t0003-slow"]


async def test_a_wait_that_runs_out_names_a_few_topics_and_the_count() -> None:
    names = [f"t{n}" for n in range(8)]
    admin = Admin(leaderless=set(names))
    admin.created = set(names)
    with pytest.raises(ComponentFailed) as raised:
        await _wait_for_leaders(admin, names, within=0.1)
    assert "8 topic(s) have partitions without a leader" in raised.value.message
    assert "t0, t1, t2, t3, t4 and 3 more" in raised.value.message
