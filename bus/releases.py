"""Released schema versions, recorded in the repository under ``schemas/released/<type>/``.

A version is *released* once boxes may have written events with it. Each released version is
kept as the expanded schema (``v1.avsc``, ``v2.avsc``, ...), so the compatibility gate works
offline, in CI, without a registry: every current schema must stay compatible with all of them.
``boxbus schemas release`` records the current schemas that changed, after that check.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from bus.catalog import DEFAULT_SCHEMAS_DIR, EventSchema, Schema, SchemaCatalog, canonical_text
from bus.compat import Problem, check
from bus.errors import IncompatibleSchema
from bus.registry import Compatibility


def released_dir(schemas_dir: Path = DEFAULT_SCHEMAS_DIR) -> Path:
    return schemas_dir / "released"


def released_versions(fullname: str, schemas_dir: Path = DEFAULT_SCHEMAS_DIR) -> list[Schema]:
    folder = released_dir(schemas_dir) / fullname
    if not folder.is_dir():
        return []
    files = sorted(folder.glob("v*.avsc"), key=lambda p: int(p.stem[1:]))
    return [json.loads(p.read_text()) for p in files]


@dataclass(frozen=True)
class Verdict:
    event: EventSchema
    released: int  # how many versions are released
    changed: bool  # the current schema differs from the latest released one
    problems: list[Problem]


def check_catalog(catalog: SchemaCatalog, schemas_dir: Path = DEFAULT_SCHEMAS_DIR,
                  mode: Compatibility = Compatibility.BACKWARD_TRANSITIVE) -> list[Verdict]:
    verdicts = []
    for event in catalog:
        versions = released_versions(event.fullname, schemas_dir)
        changed = not versions or canonical_text(versions[-1]) != event.text
        verdicts.append(Verdict(event, len(versions), changed,
                                check(event.schema, versions, mode) if changed else []))
    return verdicts


def release(catalog: SchemaCatalog, schemas_dir: Path = DEFAULT_SCHEMAS_DIR) -> list[str]:
    """Record every changed schema as a new released version; refuses all if any breaks."""
    verdicts = check_catalog(catalog, schemas_dir)
    broken = [v for v in verdicts if v.problems]
    if broken:
        details = "\n".join(f"{v.event.fullname}:\n  " + "\n  ".join(map(str, v.problems))
                            for v in broken)
        raise IncompatibleSchema(f"not released: incompatible with released versions\n{details}",
                                 hint="fix the schemas as suggested and release again")
    written = []
    for verdict in verdicts:
        if verdict.changed:
            folder = released_dir(schemas_dir) / verdict.event.fullname
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"v{verdict.released + 1}.avsc"
            path.write_text(json.dumps(verdict.event.schema, indent=2, ensure_ascii=False) + "\n")
            written.append(str(path.relative_to(schemas_dir)))
    return written
