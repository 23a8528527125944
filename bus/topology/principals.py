"""Who connects to a network's cluster, and what each may do: derived from the topology alone.

Every box of the topology connects as its own Kafka user, ``<ns>.box.<id>``, and every service
of the network as ``<ns>.<service>`` (one cluster may hold several networks). A box may:

- read its own topics and join its own consumer groups: everything starting ``<ns>.box.<id>.``
  (a prefix ending in the separator, so box ``a`` never covers box ``ab``): its inbox, and its
  inbox's and ingress's dead letters;
- write its ingress topic (``<ns>.box.<id>.outbox``), where the router proves its source, and
  its inbox's dead-letter topic; and write idempotently (an explicit ``IDEMPOTENT_WRITE``: the
  fallback check for producers without it is slow in the StandardAuthorizer);
- nothing else: no other box's topics or groups, no region or control topic, no topic creation.

A partner without a box has no user: the mailer writes its ingress topic for it (the replies
it sends by e-mail, the receipts of what could not be delivered to it), so the router proves
their source like any box's.

The router reads every ingress topic and the control topics, writes the region topics, the
inboxes, the mail topic and the ingress topics' quarantine and dead letters, and commits in its
own group. The mailer reads the mail topic and the control topics, writes the partners'
ingress topics and the dead letters of mail, and commits in its own group. The aggregator
reads the region and control topics, writes the regions' dead letters, and commits in its own
group. Nothing here creates topics: ``topology apply`` does,
as the operator.
"""

from __future__ import annotations

import re

from bus import naming
from bus.acl import CLUSTER, Grant, Operation, Pattern, Resource
from bus.topology.model import BoxKind, Quota, Topology

SERVICES = ("router", "aggregator", "mailer")
_BOX_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")  # naming's rule for box ids
__all__ = ["CLUSTER", "SERVICES", "Grant", "Operation", "Pattern", "Resource", "grants",
           "of_namespace", "quotas", "users"]

def users(topology: Topology, namespace: str) -> dict[str, str]:
    """Every Kafka user of the network, with what it is (``box <id>`` or the service)."""
    found = {naming.box_principal(namespace, b.id): f"box {b.id}"
             for b in topology.boxes if b.kind is BoxKind.BOX}
    found |= {naming.service_principal(namespace, s): s for s in SERVICES}
    return found


def grants(topology: Topology, namespace: str) -> set[Grant]:
    """Every ACL the network needs: exactly what each box and service uses."""
    wanted: set[Grant] = set()
    router = naming.service_principal(namespace, "router")
    boxes = [b.id for b in topology.boxes if b.kind is BoxKind.BOX]
    for box in boxes:
        user = naming.box_principal(namespace, box)
        own = naming.box_prefix(namespace, box)
        ingress, inbox = naming.ingress_topic(namespace, box), naming.inbox_topic(namespace, box)
        wanted |= {
            Grant(user, Resource.TOPIC, own, Pattern.PREFIXED, Operation.READ),
            Grant(user, Resource.GROUP, own, Pattern.PREFIXED, Operation.READ),
            Grant(user, Resource.TOPIC, ingress, Pattern.LITERAL, Operation.WRITE),
            Grant(user, Resource.TOPIC, naming.dlq_topic(inbox), Pattern.LITERAL,
                  Operation.WRITE),
            Grant(user, Resource.CLUSTER, CLUSTER, Pattern.LITERAL, Operation.IDEMPOTENT_WRITE),
            # The signed types and every box's public keys, to verify what it receives.
            Grant(user, Resource.TOPIC, naming.control_topic(namespace, "signing"),
                  Pattern.LITERAL, Operation.READ),
            Grant(router, Resource.TOPIC, inbox, Pattern.LITERAL, Operation.WRITE),
        }
    for entry in topology.boxes:
        if entry.kind is BoxKind.BOX and entry.rpc:
            user = naming.box_principal(namespace, entry.id)
            requests = naming.requests_topic(namespace, entry.id)
            wanted |= {
                Grant(router, Resource.TOPIC, requests, Pattern.LITERAL, Operation.WRITE),
                Grant(router, Resource.TOPIC, naming.replies_topic(namespace, entry.id),
                      Pattern.LITERAL, Operation.WRITE),
                Grant(user, Resource.TOPIC, naming.dlq_topic(requests), Pattern.LITERAL,
                      Operation.WRITE),
            }
    for entry in topology.boxes:  # partners' too: the mailer writes theirs
        ingress = naming.ingress_topic(namespace, entry.id)
        wanted |= {
            Grant(router, Resource.TOPIC, ingress, Pattern.LITERAL, Operation.READ),
            Grant(router, Resource.TOPIC, naming.quarantine_topic(ingress), Pattern.LITERAL,
                  Operation.WRITE),
            Grant(router, Resource.TOPIC, naming.dlq_topic(ingress), Pattern.LITERAL,
                  Operation.WRITE),
        }
    mailer = naming.service_principal(namespace, "mailer")
    for partner in (b.id for b in topology.boxes if b.kind is BoxKind.PARTNER):
        ingress = naming.ingress_topic(namespace, partner)
        wanted |= {
            Grant(mailer, Resource.TOPIC, ingress, Pattern.LITERAL, Operation.WRITE),
            Grant(mailer, Resource.TOPIC, naming.partner_letters_topic(namespace, partner),
                  Pattern.LITERAL, Operation.WRITE),
        }
    mail = naming.mail_topic(namespace)
    wanted |= {
        Grant(mailer, Resource.TOPIC, mail, Pattern.LITERAL, Operation.READ),
        Grant(mailer, Resource.TOPIC, naming.dlq_topic(mail), Pattern.LITERAL,
              Operation.WRITE),
        Grant(mailer, Resource.TOPIC, f"{namespace}.control.", Pattern.PREFIXED,
              Operation.READ),
        Grant(mailer, Resource.GROUP, f"{namespace}.mailer", Pattern.LITERAL, Operation.READ),
        Grant(mailer, Resource.CLUSTER, CLUSTER, Pattern.LITERAL, Operation.IDEMPOTENT_WRITE),
    }
    wanted |= {
        Grant(router, Resource.TOPIC, f"{namespace}.region.", Pattern.PREFIXED,
              Operation.WRITE),
        Grant(router, Resource.TOPIC, naming.mail_topic(namespace), Pattern.LITERAL,
              Operation.WRITE),
        Grant(router, Resource.TOPIC, f"{namespace}.control.", Pattern.PREFIXED,
              Operation.READ),
        Grant(router, Resource.GROUP, f"{namespace}.router", Pattern.LITERAL, Operation.READ),
        # `router run --group <ns>.router.<name>`: instances of another group of its own.
        Grant(router, Resource.GROUP, f"{namespace}.router.", Pattern.PREFIXED,
              Operation.READ),
        Grant(router, Resource.CLUSTER, CLUSTER, Pattern.LITERAL, Operation.IDEMPOTENT_WRITE),
    }
    # The aggregator reads the region topics (never writes them: what is there has a proven
    # source) and the control topics, writes the regions' dead letters, commits in its group.
    aggregator = naming.service_principal(namespace, "aggregator")
    for region in topology.regions:
        topic = naming.region_topic(namespace, region)
        wanted |= {
            Grant(aggregator, Resource.TOPIC, topic, Pattern.LITERAL, Operation.READ),
            Grant(aggregator, Resource.TOPIC, naming.dlq_topic(topic), Pattern.LITERAL,
                  Operation.WRITE),
        }
    wanted |= {
        Grant(aggregator, Resource.TOPIC, f"{namespace}.control.", Pattern.PREFIXED,
              Operation.READ),
        Grant(aggregator, Resource.GROUP, f"{namespace}.aggregator", Pattern.LITERAL,
              Operation.READ),
        Grant(aggregator, Resource.CLUSTER, CLUSTER, Pattern.LITERAL,
              Operation.IDEMPOTENT_WRITE),
    }
    return wanted


def quotas(topology: Topology, namespace: str) -> dict[str, Quota]:
    """The byte rates of every user: a box's own, else the default for boxes; the services'."""
    rates = {naming.box_principal(namespace, b.id): b.quota or topology.defaults.box_quota
             for b in topology.boxes if b.kind is BoxKind.BOX}
    rates |= {naming.service_principal(namespace, s): topology.defaults.service_quota
              for s in SERVICES}
    return rates


def of_namespace(namespace: str, user: str) -> bool:
    """Whether a Kafka user is one boxbus made for this network (and may remove): a box's,
    ``<ns>.box.<id>`` with an id boxbus allows (no dot), or a service's."""
    prefix = f"{namespace}.box."
    if user.startswith(prefix):
        return _BOX_ID.match(user[len(prefix):]) is not None
    return user in {naming.service_principal(namespace, s) for s in SERVICES}
