"""The order as a UBL 2.1 Order document following Peppol BIS Ordering 3, attached to the
order's e-mail so that a partner's own ERP can import it instead of typing it.

What is filled in, in the order the UBL schema wants it: the BIS customization and profile,
the order id, issue date and time, a note, the currency, the buyer's reference (the boxbus
order id), the buyer and the seller (each with an electronic address: the partner's e-mail,
scheme ``EM``; the buyer's reply address, through which the partner's answers reach the
buyer's box), the requested delivery (address, period), the tax total, the anticipated
monetary total, and one line per order line (quantity with its UN/ECE Recommendation 20 unit
code, net amount, price, the item with the seller's article number and its VAT category).

Amounts are exact decimals from the event's minor units; a line's net amount is rounded to
the currency's decimals, as BIS asks.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from xml.etree import ElementTree as ET

from bus.events.models import Line, OrderAmended, OrderPlaced
from connectors.mail.letter import Party, amount, line_net

NS = "urn:oasis:names:specification:ubl:schema:xsd:Order-2"
CAC = "urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2"
CBC = "urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2"
CUSTOMIZATION = "urn:fdc:peppol.eu:poacc:trns:order:3"
PROFILE = "urn:fdc:peppol.eu:poacc:bis:ordering:3"

ET.register_namespace("", NS)
ET.register_namespace("cac", CAC)
ET.register_namespace("cbc", CBC)

# Units as boxes write them -> UN/ECE Recommendation 20 codes (BIS requires these).
UNIT_CODES = {"pcs": "H87", "pc": "H87", "piece": "H87", "kg": "KGM", "g": "GRM",
              "t": "TNE", "l": "LTR", "ml": "MLT", "m": "MTR", "m2": "MTK", "m3": "MTQ",
              "box": "XBX", "pack": "XPK", "pallet": "XPX", "h": "HUR", "day": "DAY",
              "set": "SET", "pair": "PR"}
DEFAULT_UNIT = "C62"  # "one": a unit boxbus does not know


def unit_code(unit: str) -> str:
    return UNIT_CODES.get(unit.strip().lower(), DEFAULT_UNIT)


def _cbc(parent: ET.Element, name: str, text: str, **attributes: str) -> ET.Element:
    element = ET.SubElement(parent, f"{{{CBC}}}{name}", attributes)
    element.text = text
    return element


def _cac(parent: ET.Element, name: str) -> ET.Element:
    return ET.SubElement(parent, f"{{{CAC}}}{name}")


def _money(value: Decimal, currency: str) -> str:
    return str(value.quantize(Decimal("0.01"), ROUND_HALF_UP))


def _party(parent: ET.Element, role: str, party: Party, endpoint: str) -> None:
    holder = _cac(_cac(parent, role), "Party")
    _cbc(holder, "EndpointID", endpoint, schemeID="EM")
    _cbc(_cac(holder, "PartyIdentification"), "ID", party.box)
    _cbc(_cac(holder, "PartyName"), "Name", party.name)
    _cbc(_cac(holder, "PartyLegalEntity"), "RegistrationName", party.name)


def order_xml(event: OrderPlaced | OrderAmended, *, buyer: Party, seller: Party,
              buyer_endpoint: str, seller_endpoint: str) -> bytes:
    """The UBL Order of an order placed (or its amended lines), as UTF-8 XML."""
    lines: tuple[Line, ...] = event.lines
    currency = event.total.currency
    occurred = event.meta.occurred_at
    root = ET.Element(f"{{{NS}}}Order")
    _cbc(root, "CustomizationID", CUSTOMIZATION)
    _cbc(root, "ProfileID", PROFILE)
    order_id = event.order_id
    if isinstance(event, OrderAmended):
        order_id = f"{event.order_id}-R{event.revision}"
    _cbc(root, "ID", order_id)
    _cbc(root, "IssueDate", occurred.strftime("%Y-%m-%d"))
    _cbc(root, "IssueTime", occurred.strftime("%H:%M:%S"))
    note = event.notes if isinstance(event, OrderPlaced) else event.reason
    if note:
        _cbc(root, "Note", note)
    _cbc(root, "DocumentCurrencyCode", currency)
    _cbc(root, "CustomerReference", event.order_id)
    _party(root, "BuyerCustomerParty", buyer, buyer_endpoint)
    _party(root, "SellerSupplierParty", seller, seller_endpoint)
    if isinstance(event, OrderPlaced) and (event.delivery_address or
                                           event.requested_delivery_at):
        delivery = _cac(root, "Delivery")
        if event.delivery_address:
            address = _cac(_cac(delivery, "DeliveryLocation"), "Address")
            for n, text in enumerate(event.delivery_address.splitlines()[:2]):
                _cbc(address, "StreetName" if n == 0 else "AdditionalStreetName", text)
        if event.requested_delivery_at:
            period = _cac(delivery, "RequestedDeliveryPeriod")
            _cbc(period, "EndDate", event.requested_delivery_at.strftime("%Y-%m-%d"))
    nets = [line_net(line).quantize(Decimal("0.01"), ROUND_HALF_UP) for line in lines]
    net_total = sum(nets, Decimal(0))
    gross = amount(event.total)
    tax = _cac(root, "TaxTotal")
    _cbc(tax, "TaxAmount", _money(gross - net_total, currency), currencyID=currency)
    totals = _cac(root, "AnticipatedMonetaryTotal")
    _cbc(totals, "LineExtensionAmount", _money(net_total, currency), currencyID=currency)
    _cbc(totals, "TaxExclusiveAmount", _money(net_total, currency), currencyID=currency)
    _cbc(totals, "TaxInclusiveAmount", _money(gross, currency), currencyID=currency)
    _cbc(totals, "PayableAmount", _money(gross, currency), currencyID=currency)
    for line, net in zip(lines, nets, strict=True):
        item_line = _cac(_cac(root, "OrderLine"), "LineItem")
        _cbc(item_line, "ID", str(line.line_no))
        _cbc(item_line, "Quantity", f"{line.quantity.normalize():f}",
             unitCode=unit_code(line.unit))
        _cbc(item_line, "LineExtensionAmount", _money(net, currency), currencyID=currency)
        price = _cac(item_line, "Price")
        _cbc(price, "PriceAmount", str(amount(line.unit_price)),
             currencyID=line.unit_price.currency)
        item = _cac(item_line, "Item")
        _cbc(item, "Name", line.description)
        _cbc(_cac(item, "SellersItemIdentification"), "ID", line.sku)
        category = _cac(item, "ClassifiedTaxCategory")
        _cbc(category, "ID", "S" if line.tax_rate_bp else "Z")
        _cbc(category, "Percent", f"{Decimal(line.tax_rate_bp) / 100:f}")
        _cbc(_cac(category, "TaxScheme"), "ID", "VAT")
    return bytes(ET.tostring(root, encoding="utf-8", xml_declaration=True))
