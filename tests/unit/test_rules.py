"""A box's own rules as pure logic: what the file may say (every mistake with its line and
field), and what the rules decide: the process of an order, a partner's item codes, what
leaves the box and in what shape."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from bus.events.models import (
    CommentAdded,
    ContactKind,
    ContactUpserted,
    DeliveryReceipt,
    EventMeta,
    Line,
    Money,
    OrderKind,
    OrderPlaced,
    ReceiptStatus,
    StockChangeReason,
    StockLevelChanged,
)
from connectors.box.rules import Rules, RulesError, parse_rules
from connectors.box.tracking import _state
from tests.conftest import REPO

RULES = """\
box: farm
inbound:
  orders:
    - {partner: shop, kind: PURCHASE_ORDER, pipeline: wholesale, stage: review}
    - {kind: STORE_ORDER, pipeline: counter, stage: new}
  items:
    shop:
      SH-APPLE: {sku: apples-kg}
      SH-PLUMS-5: {sku: plums-kg, unit: kg, factor: 5}
      SH-PEARS: {sku: pears-kg, factor: 2}
  units:
    KGM: {unit: kg}
    crate: {unit: kg, factor: 6}
outbound:
  share:
    StockLevelChanged: [shop, deli]
    ContactUpserted: [shop]
    PriceListSent: related
  withhold:
    "*": {OrderPlaced: [notes]}
    shop: {ContactUpserted: [phone]}
  codes:
    shop: {apples-kg: SH-APPLE}
"""


def meta(target: str | None, key: str = "k-1") -> EventMeta:
    return EventMeta(event_id="8f8a8d1e-29a3-4f59-9b0c-1f0b5d9a0e11", source_box="farm",
                     region="north", aggregate_key=key, occurred_at=datetime.now(UTC),
                     target_box=target, correlation_id=key)


def stock(target: str | None = None) -> StockLevelChanged:
    return StockLevelChanged(meta=meta(target), warehouse="main", sku="apples-kg", unit="kg",
                             on_hand=Decimal(5), in_transit=Decimal(0), reserved=Decimal(1),
                             reason=StockChangeReason.COUNT)


def contact(target: str) -> ContactUpserted:
    return ContactUpserted(meta=meta(target), contact_id="c-1", kind=ContactKind.PERSON,
                           name="Olga", email="olga@farm.example", phone="+420 1")


def line(sku: str, quantity: str, unit: str = "pcs", price: int = 600) -> Line:
    return Line(line_no=1, sku=sku, description=sku, quantity=Decimal(quantity), unit=unit,
                unit_price=Money(amount_minor=price, currency="EUR"))


def problems(text: str, box: str | None = None) -> list[tuple[int | None, str, str]]:
    with pytest.raises(RulesError) as caught:
        parse_rules(text, "rules.yaml", box)
    return caught.value.problems


def test_a_valid_file_and_the_example_in_deploy_parse() -> None:
    rules = parse_rules(RULES, box="farm")
    assert rules.outbound.share["boxbus.logistics.StockLevelChanged"] == ("shop", "deli")
    parse_rules((REPO / "deploy" / "rules" / "fresh-farm.yaml").read_text(), box="fresh-farm")


def test_each_mistake_names_its_line_and_field() -> None:
    text = RULES.replace("factor: 5", "factor: 0").replace(
        "ContactUpserted: [shop]\n", "ContactUpserted: [shop]\n    Nonsense: [shop]\n")
    found = problems(text)
    lines = text.splitlines()
    where = {field: line for line, field, _ in found}
    assert where["inbound.items.shop.SH-PLUMS-5.factor"] == 1 + next(
        i for i, x in enumerate(lines) if "factor: 0" in x)
    assert any("Nonsense" in message for _, _, message in found)
    # A required field cannot be held back: the contract needs it.
    text = RULES.replace("shop: {ContactUpserted: [phone]}", "shop: {ContactUpserted: [name]}")
    ((line, field, message),) = problems(text)
    assert field == "outbound.withhold.shop.ContactUpserted"
    assert line == 1 + text.splitlines().index("    shop: {ContactUpserted: [name]}")
    assert "ContactUpserted.name is required by the contract" in message


def test_other_mistakes_are_explained() -> None:
    assert "not of 'shop'" in problems(RULES, box="shop")[0][2]
    assert "not valid YAML" in problems("box: [farm")[0][2]
    assert "must be a mapping" in problems("- farm")[0][2]
    (unknown,) = problems("box: farm\ninbound:\n  pipelines: []\n")
    assert unknown[:2] == (3, "inbound.pipelines")
    share_answers = problems("box: farm\noutbound:\n  share:\n    DeliveryReceipt: [shop]\n")
    assert "always goes back to the sender" in share_answers[0][2]
    withhold_unknown = problems("box: farm\noutbound:\n  withhold:\n    shop: "
                                "{ContactUpserted: [shoe_size]}\n")
    assert "has no field 'shoe_size'" in withhold_unknown[0][2]


def test_an_order_lands_in_the_first_matching_process() -> None:
    rules = parse_rules(RULES)
    assert rules.process_for("shop", OrderKind.PURCHASE_ORDER) == ("wholesale", "review")
    assert rules.process_for("deli", OrderKind.STORE_ORDER) == ("counter", "new")
    assert rules.process_for("deli", OrderKind.PURCHASE_ORDER) == ("sales", "new")


def test_a_partners_item_codes_and_units_become_the_boxs_own() -> None:
    rules = parse_rules(RULES)
    assert rules.own_item("shop", "SH-APPLE", "kg") == ("apples-kg", "kg", Decimal(1))
    assert rules.own_item("shop", "SH-PLUMS-5", "box") == ("plums-kg", "kg", Decimal(5))
    # No unit on the item: the unit table converts, and the item's factor multiplies.
    assert rules.own_item("shop", "SH-PEARS", "crate") == ("pears-kg", "kg", Decimal(12))
    assert rules.own_item("shop", "SH-KIWI", "kg") is None  # a person must map it
    # A partner without an item list writes in this box's codes.
    assert rules.own_item("deli", "apples-kg", "KGM") == ("apples-kg", "kg", Decimal(1))


def test_what_leaves_the_box_is_narrowed_shaped_and_translated() -> None:
    rules = parse_rules(RULES)
    level = stock()
    copies = rules.outgoing(level)
    assert [c.meta.target_box for c in copies] == ["shop", "deli"]
    assert len({c.meta.event_id for c in copies}) == 2
    assert copies == rules.outgoing(level)  # a retry makes the same copies
    # The shop gets it in its own code for the article.
    assert [getattr(c, "sku", None) for c in copies] == ["SH-APPLE", "apples-kg"]
    # Contacts and stock go nowhere unless listed; a listed partner gets them shaped.
    assert Rules(box="farm").outgoing(stock()) == []
    assert Rules(box="farm").outgoing(contact("shop")) == []
    (shaped,) = rules.outgoing(contact("shop"))
    assert isinstance(shaped, ContactUpserted)
    assert shaped.phone is None and shaped.email == "olga@farm.example"
    assert rules.outgoing(contact("deli")) == []
    # Anything else goes as it did, with the fields held back from everyone removed.
    order = OrderPlaced(meta=meta("shop"), order_id="o-1", kind=OrderKind.PURCHASE_ORDER,
                        buyer_box="farm", supplier_box="shop", lines=(line("apples-kg", "3"),),
                        total=Money(amount_minor=1800, currency="EUR"), notes="cost 4.10/kg")
    (sent,) = rules.outgoing(order)
    assert isinstance(sent, OrderPlaced)
    assert sent.notes is None and sent.lines[0].sku == "SH-APPLE"
    # Sent to no one in particular, it leaves without what any partner must not see.
    broadcast = contact("shop").model_copy(update={"meta": meta(None)})
    assert Rules(box="farm").outgoing(broadcast) == []  # contacts unlisted go to nobody
    wide = parse_rules(RULES.replace("ContactUpserted: [shop]", "ContactUpserted: related"))
    (any_partner,) = wide.outgoing(broadcast)
    assert isinstance(any_partner, ContactUpserted) and any_partner.phone is None
    comment = CommentAdded(meta=meta("deli"), subject_id="o-1", comment_id="c", author="a",
                           text="hello")
    assert rules.outgoing(comment) == [comment]
    receipt = DeliveryReceipt(meta=meta("deli"), receipt_for_event_id="e",
                              receipt_for_type="t", status=ReceiptStatus.ACCEPTED,
                              processed_at=datetime.now(UTC))
    assert rules.outgoing(receipt) == [receipt]


def test_receipt_states_and_what_is_overdue() -> None:
    now = datetime.now(UTC)
    late = timedelta(minutes=5)
    old, fresh = now - timedelta(minutes=10), now - timedelta(seconds=10)
    base = {"status": None, "refused_code": None, "recipient": None, "target_box": "shop",
            "by_mail": False, "delivered_at": None, "routed_at": None, "sent_at": None,
            "created_at": old}
    assert _state(base, now, late) == ("waiting", True, False)  # the relay is not running
    assert _state({**base, "created_at": fresh}, now, late) == ("waiting", False, False)
    assert _state({**base, "sent_at": old}, now, late) == ("sent", True, False)  # no router
    assert _state({**base, "sent_at": old, "routed_at": old}, now, late) == (
        "routed", False, True)  # to nobody: no subscriber
    delivered = {**base, "sent_at": old, "routed_at": old, "recipient": "shop",
                 "status": "delivered", "delivered_at": old}
    assert _state(delivered, now, late) == ("delivered", True, False)  # shop never answered
    # A subscriber's copy and a partner's e-mail are not answered: delivered is the end.
    assert _state({**delivered, "recipient": "hq"}, now, late) == ("delivered", False, True)
    assert _state({**delivered, "by_mail": True}, now, late) == ("delivered", False, True)
    assert _state({**delivered, "status": "rejected"}, now, late) == ("rejected", False, True)
    assert _state({**base, "refused_code": "unrelated-target"}, now, late) == (
        "refused", False, True)
