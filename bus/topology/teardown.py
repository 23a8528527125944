"""Removing a whole network from a cluster: what benchmarks and throw-away test networks do
when they are done (a network in production loses boxes through its topology file instead)."""

from __future__ import annotations

from bus import quotas
from bus.kafka import KafkaAccess, start_or_close
from bus.security import ClusterSecurity, SecurityDisabled
from bus.topology import principals

# Topics per DeleteTopics request (as many as CreateTopics takes at once: bus.topics).
DELETE_BATCH = 500


async def remove_namespace(kafka: KafkaAccess, namespace: str) -> int:
    """Delete every topic of ``namespace``, then its principals with their ACLs and quotas;
    the number of topics deleted. Only names of that namespace are touched."""
    admin = kafka.admin()
    await start_or_close(admin, kafka)
    try:
        left = sorted(t for t in await admin.list_topics() if t.startswith(f"{namespace}."))
        for start in range(0, len(left), DELETE_BATCH):
            await admin.delete_topics(left[start:start + DELETE_BATCH])
    finally:
        await admin.close()
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
