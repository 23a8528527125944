"""The users and ACLs a topology asks for (pure: no cluster)."""

from __future__ import annotations

import pytest

from bus.topology.model import byte_rate, parse_topology
from bus.topology.principals import (
    Grant,
    Operation,
    Pattern,
    Resource,
    grants,
    of_namespace,
    quotas,
    users,
)

NETWORK = """
regions: {north: {}, south: {}}
boxes:
  - {id: a, region: north, company: a}
  - {id: ab, region: north, company: ab}
  - {id: post, region: south, company: post, kind: partner, email: orders@post.example}
relationships:
  - {kind: trade, buyer: a, supplier: ab}
"""


def test_a_user_per_box_and_service_and_none_for_a_partner() -> None:
    assert users(parse_topology(NETWORK), "ns") == {
        "ns.box.a": "box a", "ns.box.ab": "box ab", "ns.router": "router",
        "ns.aggregator": "aggregator", "ns.mailer": "mailer"}


def test_the_aggregator_reads_the_regions_and_writes_none_of_them() -> None:
    topology = parse_topology(NETWORK)
    mine = {g for g in grants(topology, "ns") if g.user == "ns.aggregator"}
    writes = {g.name for g in mine if g.operation is Operation.WRITE}
    assert writes == {f"ns.region.{r}.dlq" for r in topology.regions}
    reads = {g.name for g in mine if g.operation is Operation.READ and g.resource is Resource.TOPIC}
    assert reads == {f"ns.region.{r}" for r in topology.regions} | {"ns.control."}


def test_a_box_reads_its_own_topics_and_writes_only_its_ingress() -> None:
    found = grants(parse_topology(NETWORK), "ns")
    mine = {g for g in found if g.user == "ns.box.a"}
    assert mine == {
        Grant("ns.box.a", Resource.TOPIC, "ns.box.a.", Pattern.PREFIXED, Operation.READ),
        Grant("ns.box.a", Resource.GROUP, "ns.box.a.", Pattern.PREFIXED, Operation.READ),
        Grant("ns.box.a", Resource.TOPIC, "ns.box.a.outbox", Pattern.LITERAL, Operation.WRITE),
        Grant("ns.box.a", Resource.TOPIC, "ns.box.a.inbox.dlq", Pattern.LITERAL,
              Operation.WRITE),
        Grant("ns.box.a", Resource.CLUSTER, "kafka-cluster", Pattern.LITERAL,
              Operation.IDEMPOTENT_WRITE),
        # the signed types and the boxes' public keys, to verify what it receives
        Grant("ns.box.a", Resource.TOPIC, "ns.control.signing", Pattern.LITERAL,
              Operation.READ),
    }
    # Prefixes end with the separator: box a's never covers box ab's names.
    for grant in mine:
        if grant.pattern is Pattern.PREFIXED:
            assert grant.name.endswith(".") and not "ns.box.ab.inbox".startswith(grant.name)
    assert not any(g.user == "ns.box.post" for g in found)


def test_the_router_gets_exactly_what_it_uses() -> None:
    router = {(g.resource, g.name, g.pattern, g.operation)
              for g in grants(parse_topology(NETWORK), "ns") if g.user == "ns.router"}
    reads = {n for r, n, p, o in router if o is Operation.READ and r is Resource.TOPIC}
    writes = {n for r, n, p, o in router if o is Operation.WRITE}
    assert reads == {"ns.box.a.outbox", "ns.box.ab.outbox", "ns.box.post.outbox",
                     "ns.control."}
    assert writes == {"ns.box.a.inbox", "ns.box.ab.inbox", "ns.region.", "ns.mail",
                      "ns.box.a.outbox.quarantine", "ns.box.a.outbox.dlq",
                      "ns.box.ab.outbox.quarantine", "ns.box.ab.outbox.dlq",
                      "ns.box.post.outbox.quarantine", "ns.box.post.outbox.dlq"}
    assert (Resource.GROUP, "ns.router", Pattern.LITERAL, Operation.READ) in router
    assert Grant("ns.router", Resource.TOPIC, "ns.region.", Pattern.PREFIXED,
                 Operation.WRITE).describe() == "ns.router: write topic ns.region.*"


def test_users_of_a_namespace() -> None:
    assert of_namespace("ns", "ns.box.a") and of_namespace("ns", "ns.router")
    assert not of_namespace("ns", "ns2.box.a") and not of_namespace("ns", "admin")
    assert not of_namespace("ns", "ns.mailbox")
    assert not of_namespace("ns", "ns.box.x.box.y")  # another network's user, not ns's


def test_quotas_come_from_the_topology() -> None:
    text = NETWORK.replace("  - {id: ab, region: north, company: ab}",
                           "  - {id: ab, region: north, company: ab, "
                           "quota: {produce: 2MiB, fetch: 512KiB}}") + (
        "defaults: {box_quota: {produce: 100KB, fetch: 1048576}}\n")
    rates = quotas(parse_topology(text), "ns")
    assert (rates["ns.box.a"].produce, rates["ns.box.a"].fetch) == (100_000, 1_048_576)
    assert (rates["ns.box.ab"].produce, rates["ns.box.ab"].fetch) == (2 * 1024**2, 512 * 1024)
    assert rates["ns.router"].produce == 64 * 1024**2  # services carry every box's traffic
    assert "ns.box.post" not in rates


def test_a_byte_rate_is_read_with_its_unit_or_refused() -> None:
    assert [byte_rate(v) for v in ("1MiB", "1.5 KiB", "2MB", 4096, "10B")] == [
        1_048_576, 1536, 2_000_000, 4096, 10]
    for bad in ("fast", "-1MiB", 0, True, "1 TB"):
        with pytest.raises(ValueError, match="byte rate"):
            byte_rate(bad)


def test_the_mailer_writes_for_the_partners_and_reads_the_mail() -> None:
    mine = {(g.resource, g.name, g.pattern, g.operation)
            for g in grants(parse_topology(NETWORK), "ns") if g.user == "ns.mailer"}
    reads = {n for r, n, p, o in mine if o is Operation.READ and r is Resource.TOPIC}
    writes = {n for r, n, p, o in mine if o is Operation.WRITE}
    assert reads == {"ns.mail", "ns.control."}
    # The partner's ingress topic (its replies, the receipts of undeliverable mail), what
    # could not be delivered to it, and the mail topic's dead letters: no box's topics.
    assert writes == {"ns.box.post.outbox", "ns.box.post.mail.dlq", "ns.mail.dlq"}
    assert (Resource.GROUP, "ns.mailer", Pattern.LITERAL, Operation.READ) in mine


def test_a_box_in_request_reply_gets_its_questions_and_answers_from_the_router() -> None:
    text = NETWORK.replace("{id: a, region: north, company: a}",
                           "{id: a, region: north, company: a, rpc: true}")
    found = grants(parse_topology(text), "ns")
    router_writes = {g.name for g in found if g.user == "ns.router"
                     and g.operation is Operation.WRITE}
    assert {"ns.box.a.requests", "ns.box.a.replies"} <= router_writes
    assert "ns.box.ab.requests" not in router_writes  # ab takes no part
    # a reads them through its own prefix, and dead-letters questions it cannot read.
    assert Grant("ns.box.a", Resource.TOPIC, "ns.box.a.requests.dlq", Pattern.LITERAL,
                 Operation.WRITE) in found
    assert Grant("ns.box.a", Resource.TOPIC, "ns.box.a.", Pattern.PREFIXED,
                 Operation.READ) in found
