"""PostgreSQL helpers shared by the stack and the box SDK."""

from __future__ import annotations

import re

import asyncpg

from bus.errors import ConfigError

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,62}$")


async def create_database(server_url: str, name: str) -> str:
    """Create database ``name`` on the server at ``server_url`` unless it exists; its URL.

    One database per box is the model of the SDK; creating one takes a fraction of a second.
    """
    if not _NAME.match(name):
        raise ConfigError(
            f"{name!r} is not a usable database name",
            hint="use letters, digits, '_' and '-' (at most 63), starting with a letter or '_'",
        )
    conn = await asyncpg.connect(server_url)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    base, _, _ = server_url.partition("?")[0].rpartition("/")
    return f"{base}/{name}"
