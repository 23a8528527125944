"""Removing a whole network from a cluster: what benchmarks and throw-away test networks do
when they are done (a network in production loses boxes through its topology file instead)."""

from __future__ import annotations

import asyncio

from confluent_kafka import KafkaException

from bus import quotas
from bus.kafka import KafkaAccess, start_or_close
from bus.log import get_logger
from bus.security import ClusterSecurity, SecurityDisabled
from bus.topology import principals

log = get_logger(__name__)

# Topics per DeleteTopics request (as many as CreateTopics takes at once: bus.topics).
DELETE_BATCH = 500


async def remove_namespace(kafka: KafkaAccess, namespace: str) -> int:
    """Delete every topic of ``namespace``, its consumer groups, then its principals with
    their ACLs and quotas; the number of topics deleted. Only names of that namespace are
    touched."""
    admin = kafka.admin()
    await start_or_close(admin, kafka)
    try:
        left = sorted(t for t in await admin.list_topics() if t.startswith(f"{namespace}."))
        for start in range(0, len(left), DELETE_BATCH):
            await admin.delete_topics(left[start:start + DELETE_BATCH])
        groups = sorted(g[0] for g in await admin.list_consumer_groups()
                        if g[0].startswith(f"{namespace}."))
    finally:
        await admin.close()
    if groups:
        await asyncio.to_thread(_delete_groups, kafka, groups)
    security = ClusterSecurity(kafka)
    try:
        users = {u for u in await security.users() if principals.of_namespace(namespace, u)}
        grants = {g for g in await security.grants()
                  if principals.of_namespace(namespace, g.user)}
    except SecurityDisabled:
        return len(left)  # no authorizer: no users or ACLs were made
    await security.remove(grants)
    await quotas.Quotas(kafka).set({user: {} for user in users})
    await security.delete_users(users)
    return len(left)


def _delete_groups(kafka: KafkaAccess, groups: list[str]) -> None:
    """Delete consumer groups (aiokafka's admin cannot; librdkafka's can). A group that still
    has members, or is gone already, is left as it is: removing a network does not fail on
    it."""
    admin = kafka.librdkafka_admin(**{"socket.timeout.ms": "10000"})
    for group, future in admin.delete_consumer_groups(groups, request_timeout=10).items():
        try:
            future.result(15)
        except KafkaException as exc:
            log.info("consumer group left on the cluster", group=group, error=str(exc))
