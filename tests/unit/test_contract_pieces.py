"""Pure pieces of the contract: the wire format, the envelope's headers, topic names, the
catalog's expansion, and the gates `make test` keeps (models follow the schemas; every schema
stays compatible with its released versions; every example is a valid event)."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import fastavro
import pytest
from pydantic import ValidationError

from bus import (
    ConfigError,
    Envelope,
    InvalidEnvelope,
    WireFormatError,
    naming,
    wire,
)
from bus.catalog import SchemaCatalog, canonical_text
from bus.codegen import MODELS_PATH, render
from bus.events import EVENT_TYPES
from bus.events.models import EventMeta, ItemQuantity, OrderPlaced
from bus.examples import example, example_path
from bus.releases import check_catalog, released_versions


@pytest.fixture(scope="module")
def catalog() -> SchemaCatalog:
    return SchemaCatalog.load()


def test_wire_format_frames_and_refuses_what_is_not_framed() -> None:
    framed = wire.frame(258, b"avro")
    assert framed == b"\x00\x00\x00\x01\x02avro"
    schema_id, body = wire.unframe(framed)
    assert (schema_id, bytes(body)) == (258, b"avro")
    with pytest.raises(WireFormatError, match="no value"):
        wire.unframe(None)
    with pytest.raises(WireFormatError, match="shorter than the 5-byte"):
        wire.unframe(b"\x00\x01")
    with pytest.raises(WireFormatError, match="byte 0x7b, not the magic byte"):
        wire.unframe(b'{"json": true}')


def test_envelope_round_trips_through_headers() -> None:
    event = example("boxbus.orders.OrderPlaced")
    envelope = Envelope.of(event, dataschema="http://registry/schemas/ids/3")
    headers = envelope.to_headers()
    names = [name for name, _ in headers]
    assert names[:8] == ["ce_specversion", "ce_id", "ce_source", "ce_type", "ce_time",
                         "content-type", "ce_region", "ce_partitionkey"]
    assert dict(headers)["ce_source"] == b"/boxes/north"
    assert dict(headers)["ce_time"].endswith(b"Z")
    assert Envelope.from_headers(headers) == envelope
    assert envelope.disagreement_with(event) is None


@pytest.mark.parametrize(("change", "message"), [
    (lambda h: [x for x in h if x[0] != "ce_type"], "ce_type missing"),
    (lambda h: [*h, ("ce_specversion", b"0.3")], "not '1.0'"),
    (lambda h: [(k, b"text/json" if k == "content-type" else v) for k, v in h],
     "content-type is 'text/json'"),
    (lambda h: [(k, b"north" if k == "ce_source" else v) for k, v in h], "/boxes/<box id>"),
    (lambda h: [(k, b"yesterday" if k == "ce_time" else v) for k, v in h], "RFC 3339"),
    (lambda h: [(k, b"\xff" if k == "ce_region" else v) for k, v in h], "not UTF-8"),
])
def test_bad_headers_say_which_header_is_wrong(change, message) -> None:  # type: ignore[no-untyped-def]
    headers = Envelope.of(example("boxbus.orders.OrderPlaced")).to_headers()
    with pytest.raises(InvalidEnvelope, match=message):
        Envelope.from_headers(change(headers))


def test_topic_names() -> None:
    assert naming.region_topic("boxbus", "north") == "boxbus.region.north"
    assert naming.region_of_topic("boxbus", "boxbus.region.north") == "north"
    assert naming.region_of_topic("boxbus", "boxbus.region.north.dlq") is None
    assert naming.region_of_topic("boxbus", "other.region.north") is None
    assert naming.dlq_topic("boxbus.region.north") == "boxbus.region.north.dlq"
    assert naming.dlq_topic("boxbus.region.north.dlq") == "boxbus.region.north.dlq"
    assert naming.subject("t", "boxbus.orders.OrderPlaced") == "t-boxbus.orders.OrderPlaced"
    with pytest.raises(ConfigError, match="not a region name"):
        naming.region_topic("boxbus", "North Pole")


def test_catalog_holds_every_event_type_self_contained(catalog: SchemaCatalog) -> None:
    expected = {"OrderPlaced", "OrderAmended", "OrderConfirmed", "OrderCancelled",
                "CommentAdded", "DocumentAttached", "ShipmentDispatched", "GoodsReceived",
                "StockLevelChanged", "InvoiceIssued", "PaymentRecorded", "ContactUpserted",
                "PartnerInvited", "DirectiveSent", "PriceListSent", "BranchReportSent",
                "DeliveryReceipt", "EventsRouted", "BillingPeriodRequested",
                "BillingPeriodAnswered", "ContractRatesRequested", "ContractRatesAnswered",
                "BookingMade", "ServiceDelivered", "ContractRatesChanged"}
    assert {e.name for e in catalog} == expected
    for event in catalog:
        text = event.text
        # Shared types are defined inline once, then referenced by name.
        assert text.count('"name":"EventMeta"') == 1
        assert json.loads(text) == event.schema and canonical_text(event.schema) == text
        fastavro.parse_schema(json.loads(text))  # valid on its own, no other file needed


def test_every_record_and_field_is_documented(catalog: SchemaCatalog) -> None:
    def walk(node: object, where: str) -> None:
        if isinstance(node, list):
            for branch in node:
                walk(branch, where)
        elif isinstance(node, dict):
            if node.get("type") in ("record", "enum", "fixed"):
                assert node.get("doc"), f"{where}: {node['name']} has no doc"
            for field in node.get("fields", []):
                assert field.get("doc"), f"{where}.{field['name']} has no doc"
                walk(field["type"], f"{where}.{field['name']}")
            walk(node.get("items"), where)

    for event in catalog:
        walk(event.schema, event.name)


def test_money_is_minor_units_quantities_exact_times_millis(catalog: SchemaCatalog) -> None:
    money = catalog.named["boxbus.common.Money"]
    assert [f["type"] for f in money["fields"]] == ["long", "string"]
    quantity = catalog.named["boxbus.common.Quantity"]
    assert quantity["logicalType"] == "decimal" and quantity["scale"] == 3
    everything = json.dumps([e.schema for e in catalog])
    assert '"float"' not in everything and '"double"' not in everything
    line = ItemQuantity(line_no=1, sku="A", quantity=Decimal("2.5"), unit="kg")
    assert line.quantity == Decimal("2.500") and str(line.quantity) == "2.500"
    with pytest.raises(ValidationError, match="more than 3 decimal places"):
        ItemQuantity(line_no=1, sku="A", quantity=Decimal("0.0001"), unit="kg")
    at = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=timezone(timedelta(hours=2)))
    meta = EventMeta(event_id="e", source_box="b", region="r", aggregate_key="k",
                     occurred_at=at)
    assert meta.occurred_at == datetime(2026, 1, 2, 1, 4, 5, 678000, tzinfo=UTC)
    with pytest.raises(ValidationError, match="timezone-aware"):
        EventMeta(event_id="e", source_box="b", region="r", aggregate_key="k",
                  occurred_at=datetime(2026, 1, 2))


def test_models_are_immutable_and_strict() -> None:
    event = example("boxbus.orders.OrderPlaced")
    assert isinstance(event, OrderPlaced)
    with pytest.raises(ValidationError):
        event.order_id = "other"  # type: ignore[misc]
    with pytest.raises(ValidationError, match="extra"):
        OrderPlaced.model_validate({**event.model_dump(), "surprise": 1})


def test_generated_models_match_the_schemas(catalog: SchemaCatalog) -> None:
    """Fails when a schema changed and `boxbus schemas codegen` was not run (or the model file
    was edited by hand)."""
    assert MODELS_PATH.read_text() == render(catalog)
    assert set(EVENT_TYPES) == {e.fullname for e in catalog}


def test_every_schema_reads_every_released_version(catalog: SchemaCatalog) -> None:
    """The compatibility gate: a change that breaks a released version fails `make test`."""
    verdicts = check_catalog(catalog)
    broken = {v.event.fullname: [str(p) for p in v.problems] for v in verdicts if v.problems}
    assert broken == {}
    assert all(v.released >= 1 for v in verdicts), "release new event types: schemas release"
    assert not [v.event.fullname for v in verdicts if v.changed], (
        "a schema changed since its last release: run `boxbus schemas release`")


def test_released_versions_are_readable_with_the_current_schema(catalog: SchemaCatalog) -> None:
    """Events written with each released version decode with today's schema."""
    for event in catalog:
        for version in released_versions(event.fullname):
            old = fastavro.parse_schema(version)
            datum = EVENT_TYPES[event.fullname].model_validate_json(
                example_path(event.fullname).read_text()).to_avro()
            buffer = io.BytesIO()
            fastavro.schemaless_writer(buffer, old, datum)
            buffer.seek(0)
            assert fastavro.schemaless_reader(buffer, old, event.parsed) is not None


def test_every_example_is_a_valid_event_of_its_type(catalog: SchemaCatalog) -> None:
    for event in catalog:
        loaded = example(event.fullname, fresh=False)
        assert loaded.TYPE == event.fullname  # noqa: SIM300
        assert fastavro.validation.validate(loaded.to_avro(), event.parsed)
        fresh = example(event.fullname)
        assert fresh.meta.event_id != loaded.meta.event_id


def test_unknown_type_names_list_the_known_ones(catalog: SchemaCatalog) -> None:
    assert catalog.by_short_name("order-placed").fullname == "boxbus.orders.OrderPlaced"
    with pytest.raises(ConfigError, match=r"use one of: .*OrderPlaced"):
        catalog.by_short_name("OrderShipped")
