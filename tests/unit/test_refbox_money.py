"""The reference box's money as pure logic: a line is rounded once, half to even, and a line in
a partner's units becomes the box's own without the partner's amount being what it bills."""

from __future__ import annotations

from decimal import Decimal

from bus.events.models import Line, Money
from connectors.box.rules import parse_rules
from connectors.refbox.core import line_total
from connectors.refbox.trade import own_lines

RULES = parse_rules("""\
box: farm
inbound:
  items:
    shop:
      SB-PEAR-6: {sku: pears-kg, unit: kg, factor: 6}
""")


def line(sku: str, quantity: str, unit: str, price: int) -> Line:
    return Line(line_no=1, sku=sku, description=sku, quantity=Decimal(quantity), unit=unit,
                unit_price=Money(amount_minor=price, currency="EUR"))


def test_a_line_is_rounded_once_half_to_even() -> None:
    assert line_total(line("a", "0.5", "kg", 1001)) == 500  # 500.5 -> 500
    assert line_total(line("a", "1.5", "kg", 1001)) == 1502  # 1501.5 -> 1502
    assert line_total(line("a", "2.125", "kg", 99)) == 210  # 210.375 -> 210
    assert line_total(line("a", "-1", "pcs", 4000)) == -4000  # a credit note's line


def test_a_partners_units_become_the_boxs_own_and_unknown_codes_wait() -> None:
    crate = line("SB-PEAR-6", "1", "crate", 1000)
    ((own,), unmapped) = own_lines(RULES, "shop", [crate])
    assert (own.sku, own.quantity, own.unit, own.unit_price.amount_minor) == (
        "pears-kg", Decimal("6.000"), "kg", 167)
    assert unmapped == []
    # The box's unit price is rounded: what goes back to the buyer (its confirmation,
    # shipment and invoice) is computed from the buyer's own line, so it bills exactly 1000.
    assert line_total(own) == 1002 and line_total(crate) == 1000
    kiwi = line("SB-KIWI", "3", "kg", 450)
    (kept,), missing = own_lines(RULES, "shop", [kiwi])
    assert kept == kiwi and missing == ["SB-KIWI"]  # kept as it came, for a person
