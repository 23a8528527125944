"""How far the aggregator is: the region topics' end offsets against the positions stored in
the analytics database (what a benchmark, the demo or an operator waits on)."""

from __future__ import annotations

import asyncpg
from aiokafka import TopicPartition

from bus import naming
from bus.kafka import KafkaAccess
from bus.topics import topic_ends


async def region_ends(kafka: KafkaAccess, namespace: str, regions: list[str]
                      ) -> dict[TopicPartition, int]:
    """End offsets of the region topics of ``regions`` (that exist)."""
    return await topic_ends(kafka, [naming.region_topic(namespace, r) for r in regions])


async def positions(dsn: str, group: str) -> dict[TopicPartition, int]:
    """The stored next offsets of the aggregator group ``group`` (none before it ran)."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT topic, partition, next_offset FROM agg_positions "
                                "WHERE consumer = $1", group)
    except asyncpg.UndefinedTableError:
        rows = []
    finally:
        await conn.close()
    return {TopicPartition(r["topic"], r["partition"]): r["next_offset"] for r in rows}


async def behind(kafka: KafkaAccess, dsn: str, namespace: str, regions: list[str]) -> int:
    """Records of the region topics not yet in the aggregates."""
    ends = await region_ends(kafka, namespace, regions)
    at = await positions(dsn, f"{namespace}.aggregator")
    return sum(max(end - at.get(tp, 0), 0) for tp, end in ends.items())
