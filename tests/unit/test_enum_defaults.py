"""Every enum of the contract is open (a default symbol for what an older reader does not know)
or closed on purpose (listed here and in the README). A new enum without either decision fails
this test, before it is released."""

from __future__ import annotations

from typing import Any

from bus.catalog import SchemaCatalog

CLOSED = {"boxbus.orders.OrderKind", "boxbus.orders.Party", "boxbus.network.ReceiptStatus",
          "boxbus.contacts.ContactKind"}


def enums(schema: Any, namespace: str = "", found: dict[str, Any] | None = None
          ) -> dict[str, Any]:
    found = {} if found is None else found
    if isinstance(schema, dict):
        space = schema.get("namespace", namespace)
        if schema.get("type") == "enum":
            name = schema["name"] if "." in schema["name"] else f"{space}.{schema['name']}"
            found[name] = schema
        for value in schema.values():
            enums(value, space, found)
    elif isinstance(schema, list):
        for value in schema:
            enums(value, namespace, found)
    return found


def test_every_enum_is_open_with_a_default_or_closed_on_purpose() -> None:
    found: dict[str, Any] = {}
    for event in SchemaCatalog.load():
        enums(event.schema, found=found)
    without = {name for name, schema in found.items() if "default" not in schema}
    assert without == CLOSED, f"decide: a default symbol, or closed on purpose: {without}"
    for name, schema in found.items():
        if "default" in schema:
            assert schema["default"] in schema["symbols"], name
