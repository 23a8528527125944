"""Example events (``schemas/examples/<Type>.json``): valid, realistic, one per event type; what
`boxbus events publish TYPE --example` sends, and what the tests round-trip."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

from bus.catalog import DEFAULT_SCHEMAS_DIR
from bus.errors import ConfigError
from bus.events import EVENT_TYPES, EventBase


def example_path(fullname: str, schemas_dir: Path = DEFAULT_SCHEMAS_DIR) -> Path:
    return schemas_dir / "examples" / f"{fullname.rsplit('.', 1)[-1]}.json"


def load_event(fullname: str, text: str, *, origin: str = "the event") -> EventBase:
    """An event of type ``fullname`` from its JSON form (ConfigError saying what is wrong)."""
    from pydantic import ValidationError

    try:
        return EVENT_TYPES[fullname].model_validate_json(text)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'the document'}: {e['msg']}"
            for e in exc.errors()[:5])
        raise ConfigError(f"{origin} is not a valid {fullname}: {problems}",
                          hint="compare it with `boxbus events publish TYPE --example --dry-run`"
                          ) from exc


def example(fullname: str, *, fresh: bool = True,
            schemas_dir: Path = DEFAULT_SCHEMAS_DIR) -> EventBase:
    """The example of a type; ``fresh`` gives it a new event id and the current time, so that
    publishing it twice publishes two events (consumers deduplicate by id)."""
    path = example_path(fullname, schemas_dir)
    event = load_event(fullname, path.read_text(), origin=str(path))
    if not fresh:
        return event
    data = event.model_dump()
    data["meta"] |= {"event_id": str(uuid.uuid4()), "occurred_at": datetime.now(UTC)}
    return type(event).model_validate(data)  # validated again: times cut to milliseconds
