"""Output helpers: rich tables for people, one JSON document for programs."""

from __future__ import annotations

import json
import shutil
from typing import Any

from pydantic import BaseModel
from rich.console import Console

# Piped output (CI logs, `| less`) gets 120 columns instead of rich's 80, so addresses fit.
console = Console(width=shutil.get_terminal_size((120, 24)).columns)
# Soft wrap: a message that a program or a test greps stays on its lines.
console_err = Console(stderr=True, soft_wrap=True)


def print_json(data: BaseModel | dict[str, Any] | list[Any]) -> None:
    if isinstance(data, BaseModel):
        text = data.model_dump_json(indent=2)
    else:
        text = json.dumps(data, indent=2, default=str)
    # Plain print: rich would wrap or colour the JSON a program reads.
    print(text)  # noqa: T201
