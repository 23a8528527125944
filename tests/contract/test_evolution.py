"""Schemas evolve while boxes upgrade one by one: an old reader reads a new writer's event and
a new reader an old one, where the change is compatible; an incompatible change is refused,
by `boxbus schemas check` with words a developer can act on, and by the registry itself."""

from __future__ import annotations

import json
import shutil
import sys
import types
from collections.abc import Callable
from pathlib import Path

import pytest

from bus import IncompatibleSchema, Settings, naming
from bus.catalog import DEFAULT_SCHEMAS_DIR, SchemaCatalog
from bus.codegen import render
from bus.compat import check
from bus.events import EventBase
from bus.examples import example
from bus.registry import SchemaRegistry
from bus.serde import EventSerde

pytestmark = pytest.mark.stack

ORDER = "boxbus.orders.OrderPlaced"


def variant(tmp_path: Path, name: str, change: Callable[[dict[str, object]], None]
            ) -> tuple[SchemaCatalog, dict[str, type[EventBase]]]:
    """A copy of the schemas with OrderPlaced changed, and models generated from it."""
    root = tmp_path / name
    shutil.copytree(DEFAULT_SCHEMAS_DIR, root, ignore=shutil.ignore_patterns("released"))
    path = root / "orders" / "OrderPlaced.avsc"
    schema = json.loads(path.read_text())
    change(schema)
    path.write_text(json.dumps(schema))
    catalog = SchemaCatalog.load(root)
    module = types.ModuleType(f"boxbus_models_{name}")
    sys.modules[module.__name__] = module
    exec(compile(render(catalog), module.__name__, "exec"), module.__dict__)
    return catalog, module.EVENT_TYPES


def add_priority(schema: dict[str, object]) -> None:
    fields = schema["fields"]
    assert isinstance(fields, list)
    fields.append({"name": "priority", "type": ["null", "int"], "default": None,
                   "doc": "Optional priority, added in version 2."})


def add_required_channel(schema: dict[str, object]) -> None:
    fields = schema["fields"]
    assert isinstance(fields, list)
    fields.append({"name": "channel", "type": "string", "doc": "Required, and no default."})


async def test_old_and_new_readers_read_each_other(
    tmp_path: Path, private_settings: Settings, registry: SchemaRegistry, serde: EventSerde,
) -> None:
    topic = naming.region_topic(private_settings.topic_namespace, "north")
    v2_catalog, v2_models = variant(tmp_path, "v2", add_priority)
    v2 = EventSerde(SchemaRegistry(registry.url), v2_catalog, v2_models)

    old_event = example(ORDER)
    old_record = await serde.encode(old_event, topic)  # registers v1
    new_event = v2_models[ORDER].model_validate({**old_event.model_dump(), "priority": 5})
    new_record = await v2.encode(new_event, topic)  # registers v2 (compatible: has a default)
    assert new_record.schema_id != old_record.schema_id
    assert len(await registry.versions(naming.subject(topic, ORDER))) == 2
    # The subject's rule was set explicitly, not left to the registry's default.
    assert await registry.compatibility(naming.subject(topic, ORDER)) == "BACKWARD_TRANSITIVE"

    # The old reader reads the new writer's event: the field it does not know is skipped.
    assert await serde.decode(new_record.value) == old_event
    # The new reader reads the old writer's event: the new field takes its default.
    upgraded = await v2.decode(old_record.value)
    assert upgraded.priority is None  # type: ignore[attr-defined]
    assert upgraded.model_dump(exclude={"priority"}) == old_event.model_dump()
    # Only the foreign writer's schema is resolved; a writer schema equal to the reader's is
    # read directly (the fast path).
    assert await serde.decode(old_record.value) == old_event
    assert serde._plans[old_record.schema_id][1] is None
    assert serde._plans[new_record.schema_id][1] is not None


async def test_an_incompatible_change_is_explained_and_refused(
    tmp_path: Path, private_settings: Settings, registry: SchemaRegistry, serde: EventSerde,
    catalog: SchemaCatalog,
) -> None:
    topic = naming.region_topic(private_settings.topic_namespace, "north")
    await serde.encode(example(ORDER), topic)  # v1 is registered
    v3_catalog, v3_models = variant(tmp_path, "v3", add_required_channel)

    problems = check(v3_catalog[ORDER].schema, [catalog[ORDER].schema])
    assert len(problems) == 1
    assert problems[0].location == "channel"
    assert "added without a default" in problems[0].message
    assert 'add "default"' in problems[0].hint

    v3 = EventSerde(SchemaRegistry(registry.url), v3_catalog, v3_models)
    event = v3_models[ORDER].model_validate({**example(ORDER).model_dump(), "channel": "web"})
    with pytest.raises(IncompatibleSchema, match="incompatible with a registered version"):
        await v3.encode(event, topic)
    assert len(await registry.versions(naming.subject(topic, ORDER))) == 1
