"""The router's reports as pure logic: what an entry says after each way routing can end, and
how a box's entries are split so that no report comes near a record's size limit."""

from __future__ import annotations

from bus.topology import control
from bus.topology.model import parse_topology
from processors.router.reports import MAX_ID, MAX_REPORT_BYTES, Report, Reports
from processors.router.table import RoutingTable

NETWORK = """
regions: {north: {}}
boxes:
  - {id: shop, region: north, company: shop}
  - {id: farm, region: north, company: farm}
relationships:
  - {kind: trade, buyer: shop, supplier: farm}
"""


def reports() -> Reports:
    table = RoutingTable.from_control("ns", control.desired_records(parse_topology(NETWORK)))
    return Reports("ns", table)


def headers(event_id: str, kind: str = "boxbus.orders.OrderPlaced") -> dict[str, bytes]:
    return {"ce_id": event_id.encode(), "ce_type": kind.encode()}


def test_an_entry_tells_delivered_refused_and_what_the_brokers_turned_down() -> None:
    found = reports()
    record = object()
    entry = found.about("shop", record, {**headers("e-1"), "ce_targetbox": b"farm"})
    assert entry is not None and found.of(record) is entry and entry.target == "farm"
    entry.delivered("farm", partner=False)
    entry.delivered("post", partner=True)
    assert (entry.recipients, entry.by_mail, entry.outcome()) == (
        ["farm", "post"], ["post"], (None, None))
    # A subscriber's copy turned down: the addressee has it, the event is not refused.
    entry.undelivered("post", "undeliverable", "too large")
    assert (entry.recipients, entry.by_mail, entry.outcome()) == (["farm"], [], (None, None))
    # The addressee's copy turned down: refused, whoever else got it.
    other = found.about("shop", object(), {**headers("e-2"), "ce_targetbox": b"farm"})
    assert other is not None
    other.delivered("hq", partner=False)
    other.delivered("farm", partner=False)
    other.undelivered("farm", "undeliverable", "too large for farm's inbox")
    assert other.recipients == ["hq"]
    assert other.outcome() == ("undeliverable", "too large for farm's inbox")
    # A broadcast whose first subscriber has no inbox, delivered to the others: not refused.
    broadcast = found.about("shop", object(), headers("e-3"))
    assert broadcast is not None
    broadcast.undelivered("ghost", "missing-recipient-topic", "no inbox")
    broadcast.delivered("hq", partner=False)
    assert broadcast.outcome() == (None, None)
    nowhere = found.about("shop", object(), headers("e-4"))
    assert nowhere is not None
    nowhere.undelivered("ghost", "missing-recipient-topic", "no inbox")
    assert nowhere.outcome() == ("missing-recipient-topic", "no inbox")
    refused = Report("e-5", "t")
    refused.refused("unrelated-target", "x" * 5000)
    assert len(refused.outcome()[1] or "") == 500


def test_nobody_is_reported_to_for_unknown_boxes_and_absurd_ids() -> None:
    found = reports()
    assert found.about("ghost", object(), headers("e-1")) is None
    assert found.about("shop", object(), headers("e" * (MAX_ID + 1))) is None
    assert found.about("shop", object(), {"ce_type": b"t"}) is None
    assert not found


def test_a_busy_round_is_split_into_reports_of_bounded_size() -> None:
    found = reports()
    for n in range(20_000):
        entry = found.about("shop", object(), headers(f"{n:036d}"))
        assert entry is not None
        entry.refused("unrelated-target", "target box 'x' has no relationship with 'shop'")
    chunks = found.events()
    assert len(chunks) > 1 and all(box == "shop" for box, _ in chunks)
    assert sum(len(entries) for _, entries in chunks) == 20_000
    assert all(sum(e.size() for e in entries) <= MAX_REPORT_BYTES for _, entries in chunks)
