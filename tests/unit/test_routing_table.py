"""The router's decisions, from a topology's control records and envelope attributes alone."""

from __future__ import annotations

import pytest

from bus.topology import control
from bus.topology.model import TopologyError, parse_topology, relationship_key
from processors.router.table import ORIGIN_BOX, RoutingTable, attributes

NETWORK = """
regions: {north: {}, south: {}, central: {}}
boxes:
  - {id: hq, region: central, company: acme}
  - {id: hq-billing, region: central, company: acme}
  - {id: north-branch, region: north, company: acme}
  - {id: south-branch, region: south, company: acme}
  - {id: farm, region: north, company: farm, publishes: [OrderConfirmed, CommentAdded]}
  - {id: mill, region: north, company: mill}
  - {id: stranger, region: north, company: other}
  - {id: post, region: south, company: post, kind: partner, email: orders@post.example}
  - {id: analytics, region: central, company: acme}
relationships:
  - {kind: trade, buyer: north-branch, supplier: farm}
  - {kind: trade, buyer: north-branch, supplier: mill}
  - {kind: trade, buyer: south-branch, supplier: post}
  - {kind: branch, head_office: hq, branch: north-branch}
  - {kind: branch, head_office: hq, branch: south-branch}
  - {kind: internal, systems: [hq, hq-billing]}
subscriptions:
  - {box: hq, types: [BranchReportSent], name: reports}
  - {box: north-branch, types: [PriceListSent], where: {source: [hq]}}
  - {box: analytics, types: [OrderPlaced, OrderCancelled], scope: network, name: orders}
  - {box: hq-billing, types: [OrderPlaced], where: {region: [central]}, name: own-orders}
"""

ORDER = "boxbus.orders.OrderPlaced"


def table(text: str = NETWORK) -> RoutingTable:
    return RoutingTable.from_control("ns", control.desired_records(parse_topology(text)))


HEADER = {"targetbox": "ce_targetbox", "origin": ORIGIN_BOX, "causation": "ce_causationid",
          "subject": "ce_partitionkey", "correlationid": "ce_correlationid"}


def event(source: str, kind: str = ORDER, region: str = "north", **more: str
          ) -> dict[str, bytes]:
    """The headers of an event, as the router reads them."""
    headers = {"ce_source": f"/boxes/{source}", "ce_type": kind, "ce_region": region,
               "ce_id": more.pop("id", "e1"), **{HEADER[k]: v for k, v in more.items()}}
    return {name: value.encode() for name, value in headers.items()}


def boxes(decision: object) -> list[str]:
    return [r.box for r in decision.recipients]  # type: ignore[attr-defined]


def test_target_box_related_to_the_source_gets_it_with_network_subscribers() -> None:
    decision = table().decide(event("north-branch", targetbox="farm"), "north-branch")
    assert decision.quarantine is None
    assert boxes(decision) == ["farm", "analytics"]
    assert decision.recipients[0].topic == "ns.box.farm.inbox"
    # Every accepted event is kept in its source's region topic, proven.
    assert decision.region_topic == "ns.region.north"
    assert table().decide(event("hq", region="central"), "hq").region_topic == (
        "ns.region.central")


def test_unrelated_box_and_unrelated_target() -> None:
    routes = table()
    # stranger has no relationship: nobody but the network subscriber hears its orders ...
    assert boxes(routes.decide(event("stranger"), "stranger")) == ["analytics"]
    # ... and it cannot address a box it does not trade with.
    decision = routes.decide(event("stranger", targetbox="north-branch"), "stranger")
    assert decision.quarantine == "unrelated-target"
    assert "no relationship" in (decision.reason or "")
    assert routes.decide(event("north-branch", targetbox="nobody"), "north-branch"
                         ).quarantine == "unknown-target"


def test_partner_is_reached_through_the_mail_topic() -> None:
    decision = table().decide(event("south-branch", region="south", targetbox="post"),
                              "south-branch")
    (post, analytics) = decision.recipients
    assert (post.box, post.topic, post.partner) == ("post", "ns.mail", True)
    assert analytics.topic == "ns.box.analytics.inbox"


def test_quarantine_reasons() -> None:
    routes = table()
    unknown = routes.decide(event("ghost"), "ghost")
    assert unknown.quarantine == "unknown-source" and "ghost" in (unknown.reason or "")
    # Only the owner of an ingress topic writes it: any other source claimed is forged ...
    forged = routes.decide(event("farm", targetbox="north-branch"), "stranger")
    assert forged.quarantine == "forged-source"
    assert "'farm'" in (forged.reason or "") and "'stranger'" in (forged.reason or "")
    # ... and so is a region other than the owner's.
    elsewhere = routes.decide(event("south-branch", region="north"), "south-branch")
    assert elsewhere.quarantine == "forged-source" and "'south'" in (elsewhere.reason or "")
    # A partner's ingress topic is written by the mailer for it (its replies by e-mail): its
    # events are proven like any box's, and go where its relationships allow.
    reply = routes.decide(event("post", "boxbus.collaboration.CommentAdded", region="south",
                                targetbox="south-branch"), "post")
    assert boxes(reply) == ["south-branch"]
    # ... and the mailer writes only replies and receipts for it: nothing else passes.
    order = routes.decide(event("post", ORDER, region="south", targetbox="south-branch"),
                          "post")
    assert order.quarantine == "type-not-allowed"
    assert routes.decide(event("post", region="north"), "post").quarantine == "forged-source"
    refused = routes.decide(event("farm", targetbox="north-branch"), "farm")
    assert refused.quarantine == "type-not-allowed"
    allowed = routes.decide(event("farm", "boxbus.orders.OrderConfirmed",
                                  targetbox="north-branch"), "farm")
    assert boxes(allowed) == ["north-branch"]


def test_subscriptions_filter_on_scope_type_and_where() -> None:
    routes = table()
    price = "boxbus.network.PriceListSent"
    assert boxes(routes.decide(event("hq", price, "central"), "hq")) == ["north-branch"]
    # the same type from another source does not pass the where filter
    assert boxes(routes.decide(event("mill", price), "mill")) == []
    report = "boxbus.network.BranchReportSent"
    assert boxes(routes.decide(event("south-branch", report, "south"), "south-branch")) == ["hq"]
    # related scope: a report of a box hq has no relationship with does not reach it
    assert boxes(routes.decide(event("farm", "boxbus.collaboration.CommentAdded"), "farm")
                 ) == []
    assert boxes(routes.decide(event("hq", region="central"), "hq")
                 ) == ["analytics", "hq-billing"]


def test_loop_guard_on_source_origin_and_causation() -> None:
    routes = table()
    # A box never gets its own event back, even when it subscribes to the type.
    own = routes.decide(event("analytics", region="central"), "analytics")
    assert boxes(own) == [] and own.echoes == ("analytics",)
    # A mirrored fact is not delivered back to the box it came from.
    comment = "boxbus.collaboration.CommentAdded"
    mirrored = routes.decide(event("north-branch", comment, targetbox="farm", origin="farm"),
                             "north-branch")
    assert boxes(mirrored) == [] and mirrored.echoes == ("farm",)
    # A reaction of the same type to farm's own event does not go back to farm ...
    routes.decide(event("farm", comment, targetbox="north-branch", id="c1"), "farm")
    echo = routes.decide(event("north-branch", comment, targetbox="farm", id="c2",
                               causation="c1"), "north-branch")
    assert boxes(echo) == [] and echo.echoes == ("farm",)
    # ... but an answer of another type does (an order confirmed after an order placed).
    routes.decide(event("north-branch", targetbox="farm", id="o1"), "north-branch")
    answer = routes.decide(event("farm", "boxbus.orders.OrderConfirmed", targetbox="north-branch",
                                 id="o2", causation="o1"), "farm")
    assert boxes(answer) == ["north-branch"]


def test_decisions_are_cached_but_follow_fine_filters() -> None:
    text = NETWORK + "  - {box: mill, types: [OrderPlaced], where: {subject: [ord-7]}}\n"
    routes = table(text)
    branch = "north-branch"
    assert "mill" in boxes(routes.decide(event(branch, subject="ord-7"), branch))
    assert "mill" not in boxes(routes.decide(event(branch, subject="ord-8"), branch))


def test_records_without_an_envelope_are_invalid() -> None:
    routes = table()
    for missing in ("ce_source", "ce_type", "ce_id", "ce_region"):
        headers = event("shop")
        del headers[missing]
        assert routes.decide(headers, "north").invalid
    assert routes.decide({**event("shop"), "ce_source": b"shop"}, "north"
                         ).quarantine == "unknown-source"


def test_attributes_come_from_the_headers() -> None:
    found = attributes([("ce_source", b"/boxes/farm"), ("ce_type", b"T"), ("ce_id", b"1"),
                        ("ce_region", b"north"), (ORIGIN_BOX, b"mill"), ("other", b"x"),
                        ("ce_targetbox", b"")])
    assert found == {"source": "farm", "type": "T", "id": "1", "region": "north",
                     "origin": "mill"}
    assert attributes([("ce_source", b"farm")])["source"] == ""  # not /boxes/<id>
    assert attributes(None) == {"source": ""}


def test_the_control_records_become_the_topologys_typed_values() -> None:
    topology = parse_topology(NETWORK)
    network = control.network_of(control.desired_records(topology))
    assert sorted(network.boxes, key=lambda b: b.id) == sorted(topology.boxes,
                                                               key=lambda b: b.id)
    assert sorted(relationship_key(r) for r in network.relationships) == sorted(
        relationship_key(r) for r in topology.relationships)
    assert {s.key for s in network.subscriptions} == {s.key for s in topology.subscriptions}


def test_a_record_this_version_cannot_read_is_left_out_and_the_rest_routes() -> None:
    records = control.desired_records(parse_topology(NETWORK))
    records["boxes"]["mill"] = b"{not json"
    records["boxes"]["stranger"] = control.encode({"id": "stranger", "company": "other"})
    # A field a newer boxbus added is read past: the box is kept.
    records["boxes"]["farm"] = control.encode({"id": "farm", "region": "north",
                                               "company": "farm", "colour": "green"})
    network = control.network_of(records)
    assert {b.id for b in network.boxes} == {
        "hq", "hq-billing", "north-branch", "south-branch", "farm", "post", "analytics"}
    assert RoutingTable.of_network("ns", network).boxes.keys() == {b.id for b in network.boxes}


def test_only_the_router_writes_its_reports_and_no_box_may_be_called_router() -> None:
    """A box that published EventsRouted could forge its own or another box's receipts."""
    forged = table().decide(event("north-branch", "boxbus.network.EventsRouted",
                                  targetbox="farm"), "north-branch")
    assert forged.quarantine == "type-not-allowed" and "router" in (forged.reason or "")
    with pytest.raises(TopologyError, match="'router' is reserved"):
        parse_topology(NETWORK.replace("id: stranger", "id: router"))


RPC_NETWORK = """
regions: {central: {}}
boxes:
  - {id: sales, region: central, company: acme, rpc: true}
  - {id: billing, region: central, company: acme, rpc: true}
  - {id: outsider, region: central, company: other, rpc: true}
  - {id: plain, region: central, company: acme}
relationships:
  - {kind: internal, systems: [sales, billing, plain]}
subscriptions:
  - {box: plain, types: [BillingPeriodRequested], name: nosy}
"""


def test_questions_go_to_requests_and_answers_to_the_askers_replies_only() -> None:
    routes = table(RPC_NETWORK)
    ask = routes.decide(event("sales", "boxbus.rpc.BillingPeriodRequested", region="central",
                              targetbox="billing"), "sales")
    assert [(r.box, r.topic, r.reply) for r in ask.recipients] == [
        ("billing", "ns.box.billing.requests", False)]  # no subscriber gets a question
    assert ask.region_topic is None  # questions are not kept in the region's history
    answer = routes.decide(event("billing", "boxbus.rpc.BillingPeriodAnswered",
                                 region="central", targetbox="sales"), "billing")
    assert [(r.box, r.topic, r.reply) for r in answer.recipients] == [
        ("sales", "ns.box.sales.replies", True)]
    stranger = routes.decide(event("outsider", "boxbus.rpc.BillingPeriodRequested",
                                   region="central", targetbox="billing"), "outsider")
    assert stranger.quarantine == "unrelated-target"
    untargeted = routes.decide(event("sales", "boxbus.rpc.BillingPeriodRequested",
                                     region="central"), "sales")
    assert untargeted.quarantine == "no-target"
    no_rpc = routes.decide(event("sales", "boxbus.rpc.BillingPeriodRequested",
                                 region="central", targetbox="plain"), "sales")
    assert no_rpc.quarantine == "no-rpc" and "rpc: true" in (no_rpc.reason or "")
    assert {"ns.box.sales.requests", "ns.box.sales.replies"} <= set(routes.recipient_topics())
    assert "ns.box.plain.requests" not in routes.recipient_topics()
