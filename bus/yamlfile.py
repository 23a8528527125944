"""YAML files people write (the topology, a box's rules): parsed with pydantic, and every
mistake reported with its line and the dotted field it is about, all at once.

``problems_of`` turns a pydantic ``ValidationError`` into ``(line, field, message)`` rows found
on the YAML node tree, so that a file of several hundred lines points at the line to fix.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

Problem = tuple[int | None, str, str]  # line (1-based), dotted field, message
M = TypeVar("M", bound=BaseModel)


class At(ValueError):
    """Raised in a validator: an error about another field than the one validated (a
    cross-reference), with that field's path from the root."""

    def __init__(self, path: tuple[Any, ...], message: str) -> None:
        super().__init__(message)
        self.path = path


def parse(text: str, path: Path | str, model: type[M],
          error: Callable[[Path | str, list[Problem]], Exception], *, holds: str,
          tags: Iterable[str] = ()) -> tuple[M, Any]:
    """``text`` as a ``model``, and its node tree (for the lines of later checks); every
    problem raised at once as ``error(path, problems)``. ``holds``: what the file's mapping
    is made of, for the message when it is not a mapping."""
    try:
        root, data = compose(text)
    except yaml.YAMLError as exc:
        raise error(path, [syntax_problem(exc)]) from exc
    if not isinstance(data, dict):
        raise error(path, [(1, "", f"the file must be a mapping with {holds}")])
    try:
        return model.model_validate(data), root
    except ValidationError as exc:
        raise error(path, problems_of(exc, root, tags)) from exc


def compose(text: str) -> tuple[Any, Any]:
    """The node tree (for lines) and the data of one YAML document. ``yaml.YAMLError`` is
    left to the caller, with ``syntax_problem`` to report it."""
    return yaml.compose(text, Loader=yaml.SafeLoader), yaml.safe_load(text)


def syntax_problem(exc: yaml.YAMLError) -> Problem:
    mark = getattr(exc, "problem_mark", None)
    return (mark.line + 1 if mark else None, "",
            f"not valid YAML: {getattr(exc, 'problem', exc)}")


def problems_of(exc: ValidationError, root: Any, tags: Iterable[str] = ()) -> list[Problem]:
    """Each error of ``exc`` with the line of its field. ``tags``: the discriminators of
    tagged unions, which pydantic puts into locations although they are not fields."""
    tags = frozenset(tags)
    problems = []
    errors = exc.errors()
    for error in errors:
        location = tuple(error["loc"])
        if error["type"] == "too_short" and any(
                len(e["loc"]) > len(location) and tuple(e["loc"][:len(location)]) == location
                for e in errors):
            continue  # emptied by the errors of its items: those say what is wrong
        message = error["msg"]
        inner = error.get("ctx", {}).get("error")
        if isinstance(inner, At):
            location, message = inner.path, str(inner)
        location = tuple(p for p in location if p not in tags)
        message = message.removeprefix("Value error, ")
        problems.append((line_of(root, location), dotted(location), message))
    return problems


def render(path: object, problems: Iterable[Problem]) -> list[str]:
    return [f"{path}:{line or '?'}: {where}: {message}" if where else
            f"{path}:{line or '?'}: {message}" for line, where, message in problems]


def dotted(location: tuple[Any, ...]) -> str:
    text = ""
    for part in location:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def line_of(node: Any, location: tuple[Any, ...]) -> int | None:
    """The 1-based line of the deepest YAML node on ``location``."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in location:
        child = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value == str(part):
                    child = value
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and (
                part < len(node.value)):
            child = node.value[part]
        if child is None:
            break
        node, line = child, child.start_mark.line + 1
    return line
