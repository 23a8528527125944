"""The topology file: what a valid file means, and errors that name the line and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from bus.topology import BoxKind, Scope, TopologyError, desired_records, parse_topology
from bus.topology.control import decode
from bus.topology.model import duration_ms

REPO = Path(__file__).resolve().parents[2]

GOOD = """\
regions:
  north: {partitions: 4, retention: 3d}
boxes:
  - {id: shop, region: north, company: acme}
  - {id: farm, region: north, company: farm, kind: partner, email: a@farm.example}
relationships:
  - {kind: trade, buyer: shop, supplier: farm}
subscriptions:
  - {box: shop, types: [PriceListSent, boxbus.orders.OrderPlaced], where: {source: farm}}
"""


def test_a_valid_file_and_its_defaults() -> None:
    topology = parse_topology(GOOD)
    assert topology.regions["north"].partitions == 4
    assert topology.regions["north"].retention == 3 * 86_400_000
    farm = topology.box("farm")
    assert farm is not None and farm.kind is BoxKind.PARTNER
    (subscription,) = topology.subscriptions
    assert subscription.types[1] == "boxbus.orders.OrderPlaced"
    assert subscription.types[0].endswith(".PriceListSent")  # short names become full names
    assert subscription.scope is Scope.RELATED and subscription.where == {"source": ("farm",)}
    # The same content gives the same control key (a digest): re-applying writes nothing.
    assert parse_topology(GOOD).subscriptions[0].key == subscription.key


def test_the_sample_network_is_valid_and_its_control_records_round_trip() -> None:
    from bus.topology import load_topology

    topology = load_topology(REPO / "deploy" / "topology" / "demo.yaml")
    records = desired_records(topology)
    assert set(records["boxes"]) == {b.id for b in topology.boxes}
    assert decode(records["relationships"]["trade/north-branch/fresh-farm"])["members"] == [
        "north-branch", "fresh-farm"]
    assert decode(records["subscriptions"]["hq-analytics/network-sales"])["scope"] == "network"


@pytest.mark.parametrize(("text", "line", "field", "message"), [
    (GOOD.replace("region: north, company: acme", "region: nord, company: acme"),
     4, "boxes[0].region", "region 'nord' is not declared"),
    (GOOD.replace("supplier: farm}", "supplier: farmm}"),
     7, "relationships[0].supplier", "box 'farmm' is not declared"),
    (GOOD.replace("[PriceListSent,", "[PriceList,"),
     9, "subscriptions[0].types[0]", "'PriceList' is not an event type"),
    (GOOD.replace("partitions: 4", "partitions: 0"),
     2, "regions.north.partitions", "greater than or equal to 1"),
    (GOOD.replace("retention: 3d", "retention: 3 days"),
     2, "regions.north.retention", "not a duration"),
    (GOOD.replace(", email: a@farm.example", ""),
     5, "boxes[1]", "needs an email"),
    (GOOD.replace("where: {source: farm}", "where: {colour: red}"),
     9, "subscriptions[0].where", "cannot filter on 'colour'"),
    (GOOD + "  - {box: shop, types: [PriceListSent, OrderPlaced], where: {source: farm}}\n",
     10, "subscriptions[1]", "declared twice"),
    (GOOD.replace("  - {id: farm", "  - {id: shop"), 5, "boxes[1].id", "declared twice"),
    (GOOD.replace("company: acme}", "company: acme, colour: red}"),
     4, "boxes[0].colour", "Extra inputs are not permitted"),
    ("regions: [north\n", 2, "", "not valid YAML"),
])
def test_errors_point_at_the_line_and_field(text: str, line: int, field: str,
                                            message: str) -> None:
    with pytest.raises(TopologyError) as caught:
        parse_topology(text, "net.yaml")
    problems = caught.value.problems
    assert any(p[0] == line and p[1] == field and message in p[2] for p in problems), problems
    assert f"net.yaml:{line}:" in str(caught.value)


def test_internal_systems_belong_to_one_company() -> None:
    text = GOOD.replace("relationships:\n",
                        "relationships:\n  - {kind: internal, systems: [shop, farm]}\n")
    with pytest.raises(TopologyError) as caught:
        parse_topology(text)
    assert caught.value.problems == [
        (7, "relationships[0].systems", "internal systems belong to one company, not acme, farm")]


def test_durations() -> None:
    assert duration_ms("90m") == 5_400_000
    assert duration_ms("forever") == -1
    assert duration_ms(1000) == 1000
    with pytest.raises(ValueError, match="not a duration"):
        duration_ms("soon")
