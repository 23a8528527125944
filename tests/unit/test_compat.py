"""The compatibility gate explains each kind of breaking change in words, in every mode, and
`boxbus schemas check` / `release` refuse a schema that would break released events."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from bus import Compatibility, ConfigError, IncompatibleSchema, Settings, check
from bus.catalog import DEFAULT_SCHEMAS_DIR, SchemaCatalog
from bus.consumer import EventConsumer
from bus.events.models import ItemQuantity
from bus.examples import example
from bus.kafka import KafkaAccess
from bus.releases import release
from tests.conftest import boxbus_cli

BASE: dict[str, Any] = {
    "type": "record", "name": "Order", "namespace": "t",
    "fields": [
        {"name": "id", "type": "string"},
        {"name": "count", "type": "int"},
        {"name": "state", "type": {"type": "enum", "name": "State", "symbols": ["NEW", "DONE"]}},
        {"name": "note", "type": ["null", "string", "long"], "default": None},
    ],
}


def changed(edit: Any) -> dict[str, Any]:
    schema = copy.deepcopy(BASE)
    edit(schema)
    return schema


def test_compatible_changes_pass() -> None:
    with_default = changed(lambda s: s["fields"].append(
        {"name": "priority", "type": ["null", "int"], "default": None}))
    widened = changed(lambda s: s["fields"][1].update(type="long"))
    assert check(with_default, [BASE]) == []
    assert check(widened, [BASE]) == []  # int widens to long
    assert check(BASE, [BASE, BASE]) == []


@pytest.mark.parametrize(("edit", "location", "words", "fix"), [
    (lambda s: s["fields"].append({"name": "channel", "type": "string"}),
     "channel", "added without a default", 'add "default"'),
    (lambda s: s["fields"][1].update(type="string"),
     "count", "type changed", "add a new field with a default"),
    (lambda s: s["fields"][2]["type"].update(symbols=["NEW"]),
     "state", "lost symbol(s) {'DONE'}", '"default" symbol'),
    (lambda s: s.update(name="Purchase"),
     "Purchase", "was renamed", '"aliases"'),
    (lambda s: s["fields"][3].update(type=["null", "string"]),
     "note", "lost a branch", "keep every branch"),
])
def test_each_breaking_change_is_explained(edit: Any, location: str, words: str,
                                           fix: str) -> None:
    problems = check(changed(edit), [BASE])
    assert problems, "not detected"
    problem = problems[0]
    assert problem.location == location
    assert words in problem.message
    assert fix in problem.hint
    assert problem.version == 1 and problem.direction == "new reads old"


def test_modes_choose_which_versions_and_directions() -> None:
    v1 = BASE
    v2 = changed(lambda s: s["fields"].append({"name": "extra", "type": "int", "default": 0}))
    drops_count = changed(lambda s: s["fields"].pop(1))
    # BACKWARD looks at the latest only; the transitive mode at all of them.
    needs_count = changed(lambda s: s["fields"].append({"name": "total", "type": "int"}))
    assert len(check(needs_count, [v1, v2], Compatibility.BACKWARD)) == 1
    assert len(check(needs_count, [v1, v2], Compatibility.BACKWARD_TRANSITIVE)) == 2
    # Dropping a field without a default: new readers cope, old readers cannot (FORWARD).
    assert check(drops_count, [v1], Compatibility.BACKWARD) == []
    forward = check(drops_count, [v1], Compatibility.FORWARD)
    assert forward and forward[0].direction == "old reads new"
    assert forward[0].location == "count"
    assert len(check(drops_count, [v1], Compatibility.FULL)) == 1
    assert check(needs_count, [v1], Compatibility.NONE) == []


@pytest.fixture
def schemas_copy(tmp_path: Path) -> Path:
    root = tmp_path / "schemas"
    shutil.copytree(DEFAULT_SCHEMAS_DIR, root)
    return root


def _break_order_placed(root: Path) -> None:
    path = root / "orders" / "OrderPlaced.avsc"
    schema = json.loads(path.read_text())
    schema["fields"].append({"name": "channel", "type": "string", "doc": "new, no default"})
    path.write_text(json.dumps(schema))


def test_schemas_check_fails_and_explains(schemas_copy: Path) -> None:
    env = {**os.environ, "BOXBUS_SCHEMAS_DIR": str(schemas_copy)}
    ok = subprocess.run([*boxbus_cli(), "schemas", "check"], env=env, capture_output=True,
                        text=True, check=False)
    assert ok.returncode == 0 and "compatible" in ok.stdout
    _break_order_placed(schemas_copy)
    broken = subprocess.run([*boxbus_cli(), "schemas", "check", "--json"], env=env,
                            capture_output=True, text=True, check=False)
    assert broken.returncode == 1
    report = json.loads(broken.stdout)
    (problem,) = report["problems"]["boxbus.orders.OrderPlaced"]
    assert problem["location"] == "channel" and "without a default" in problem["message"]


def test_release_refuses_a_breaking_change_and_records_a_compatible_one(
    schemas_copy: Path,
) -> None:
    catalog = SchemaCatalog.load(schemas_copy)
    assert release(catalog, schemas_copy) == []  # nothing changed
    _break_order_placed(schemas_copy)
    with pytest.raises(IncompatibleSchema, match="channel"):
        release(SchemaCatalog.load(schemas_copy), schemas_copy)
    path = schemas_copy / "orders" / "OrderPlaced.avsc"
    schema = json.loads(path.read_text())
    schema["fields"][-1]["default"] = "web"
    path.write_text(json.dumps(schema))
    assert release(SchemaCatalog.load(schemas_copy), schemas_copy) == [
        "released/boxbus.orders.OrderPlaced/v2.avsc"]


def test_events_refuse_what_no_consumer_would_accept() -> None:
    event = example("boxbus.orders.OrderPlaced")
    data = event.model_dump()
    for field, value, words in (("event_id", " ", "meta.event_id must not be empty"),
                                ("aggregate_key", "", "meta.aggregate_key must not be empty"),
                                ("region", "North Pole", "is not a region name")):
        broken = copy.deepcopy(data)
        broken["meta"][field] = value
        with pytest.raises(ValidationError, match=words):
            type(event).model_validate(broken)
    with pytest.raises(ValidationError, match="does not fit 18 digits"):
        ItemQuantity(line_no=1, sku="A", quantity=Decimal("1e15"), unit="kg")


def test_a_consumer_of_a_dead_letter_topic_is_refused() -> None:
    with pytest.raises(ConfigError, match="dead-letter topic"):
        EventConsumer(Settings(), KafkaAccess("127.0.0.1:1"), ["boxbus.region.north.dlq"], "g",
                      serde=None)  # type: ignore[arg-type]
