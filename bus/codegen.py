"""Python types follow from the Avro schemas: this module writes ``bus/events/models.py`` from
the schema catalog (``boxbus schemas codegen``), and a test fails when the two differ."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from bus.catalog import SchemaCatalog, fullname_of

MODELS_PATH = Path(__file__).resolve().parent / "events" / "models.py"

_PRIMITIVE = {"string": "str", "int": "int", "long": "int", "boolean": "bool",
              "double": "float", "float": "float", "bytes": "bytes", "null": "None"}


class _Writer:
    def __init__(self) -> None:
        self.classes: dict[str, str] = {}  # short name -> source
        self.order: list[str] = []
        self.fullnames: dict[str, str] = {}  # short name -> full name (collision check)
        self.needs: set[str] = set()

    def _claim(self, fullname: str) -> str:
        short = fullname.rsplit(".", 1)[-1]
        other = self.fullnames.setdefault(short, fullname)
        if other != fullname:
            raise ValueError(f"two schema types are both named {short}: {other}, {fullname}")
        return short

    def annotation(self, node: Any, namespace: str | None) -> str:
        if isinstance(node, str):
            if node in _PRIMITIVE:
                return _PRIMITIVE[node]
            return node.rsplit(".", 1)[-1]
        if isinstance(node, list):
            branches = [self.annotation(b, namespace) for b in node]
            return " | ".join(b for b in branches if b != "None") + (
                " | None" if "None" in branches else "")
        kind = node["type"]
        logical = node.get("logicalType")
        if logical == "timestamp-millis":
            return "Timestamp"
        if kind == "array":
            return f"tuple[{self.annotation(node['items'], namespace)}, ...]"
        if kind == "map":
            return f"dict[str, {self.annotation(node['values'], namespace)}]"
        if kind in ("record", "enum", "fixed"):
            return self.define(node, namespace)
        if logical == "decimal":
            self.needs.add("decimal")
            return ("Annotated[Decimal, AfterValidator(decimal_places("
                    f"{node['scale']}, {node['precision']}))]")
        return self.annotation(kind, namespace)

    def define(self, node: dict[str, Any], namespace: str | None) -> str:
        fullname = fullname_of(node, namespace)
        short = self._claim(fullname)
        if short in self.classes:
            return short
        self.classes[short] = ""  # reserve: recursive references see the name
        inner_ns = fullname.rsplit(".", 1)[0]
        doc = node.get("doc", "").replace('"""', "'''")
        kind = node["type"]
        if kind == "enum":
            lines = [f"class {short}(StrEnum):", *_doc(doc), ""]
            lines += [f'    {s} = "{s}"' for s in node["symbols"]]
        elif kind == "fixed":
            if node.get("logicalType") != "decimal":
                raise ValueError(f"fixed type {fullname} without a decimal logical type")
            self.needs.add("decimal")
            lines = [*textwrap.wrap(_one_line(doc), width=98, initial_indent="# ",
                                    subsequent_indent="# "),
                     f"{short} = Annotated[Decimal, "
                     f"AfterValidator(decimal_places({node['scale']}, {node['precision']}))]"]
        else:
            is_event = bool(node["fields"]) and node["fields"][0]["name"] == "meta"
            base = "EventBase" if is_event else "Record"
            body = [f'    TYPE: ClassVar[str] = "{fullname}"', ""] if is_event else []
            for field in node["fields"]:
                annotation = self.annotation(field["type"], inner_ns)
                default = ""
                if "default" in field:
                    default = " = " + _python_default(field["default"], field["type"])
                body.append(f"    {field['name']}: {annotation}{default}")
                body += _doc(field.get("doc", ""))
            lines = [f"class {short}({base}):", *_doc(doc), "", *body]
        self.classes[short] = "\n".join(lines).rstrip()
        self.order.append(short)
        return short


def _one_line(text: str) -> str:
    return " ".join(text.replace('"""', "'''").split())


def _doc(doc: str) -> list[str]:
    """A docstring indented by four spaces, wrapped to fit 100 columns."""
    if not doc:
        return []
    lines = textwrap.wrap('"""' + _one_line(doc) + '"""', width=95,
                          initial_indent="    ", subsequent_indent="    ")
    return lines


def _python_default(value: Any, avro_type: Any) -> str:
    if value is None:
        return "None"
    if isinstance(value, list):
        return "()" if not value else repr(tuple(value))
    if isinstance(avro_type, dict) and avro_type.get("type") == "enum":
        return f"{avro_type['name']}.{value}"
    return repr(value)


def render(catalog: SchemaCatalog) -> str:
    writer = _Writer()
    for event in catalog:
        writer.define(event.schema, None)
    imports = ["from __future__ import annotations", ""]
    if "decimal" in writer.needs:
        imports.append("from decimal import Decimal")
    imports += ["from enum import StrEnum", "from typing import Annotated, ClassVar", "",
                "from pydantic import AfterValidator", "",
                "from bus.events.base import EventBase, Record, Timestamp, decimal_places"]
    events = [e.name for e in catalog]
    parts = [
        '"""Event models generated from schemas/*.avsc by `boxbus schemas codegen`.\n\n'
        "Do not edit: change the schema and generate again. A test fails when this file and\n"
        'the schemas differ."""\n\n' + "\n".join(imports).rstrip(),
        *[writer.classes[name] for name in writer.order],
        "EVENT_TYPES: dict[str, type[EventBase]] = {\n"
        + "".join(f"    {name}.TYPE: {name},\n" for name in sorted(events)) + "}",
    ]
    return "\n\n\n".join(parts) + "\n"


def write(catalog: SchemaCatalog, path: Path = MODELS_PATH) -> bool:
    """Write the models; True if the file changed."""
    text = render(catalog)
    if path.exists() and path.read_text() == text:
        return False
    path.write_text(text)
    return True
