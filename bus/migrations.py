"""Numbered schema migrations of a PostgreSQL database, for any owner of tables (the box SDK,
the aggregator): ``migrate`` applies those not applied yet, each in its own transaction, under
an advisory lock so that two processes starting at once do not race, and records each applied
version in the owner's table of versions. A migration is never edited once released, only
followed by another.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from bus.log import get_logger

log = get_logger(__name__)


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


@dataclass(frozen=True)
class Schema:
    """One owner's migrations: recorded in ``table``, serialised by ``lock_key``."""

    table: str
    lock_key: int
    migrations: Sequence[Migration]

    async def pending(self, conn: asyncpg.Connection) -> list[int]:
        """The versions not applied yet (all of them in a database never migrated)."""
        if await conn.fetchval("SELECT to_regclass($1)", self.table) is None:
            return [m.version for m in self.migrations]
        done = {r["version"] for r in await conn.fetch(f"SELECT version FROM {self.table}")}
        return [m.version for m in self.migrations if m.version not in done]

    async def migrate(self, conn: asyncpg.Connection) -> list[int]:
        """Apply the migrations not applied yet; the versions applied by this call."""
        await conn.execute("SELECT pg_advisory_lock($1)", self.lock_key)
        try:
            await conn.execute(f"""
                CREATE TABLE IF NOT EXISTS {self.table} (
                    version    int PRIMARY KEY,
                    name       text NOT NULL,
                    applied_at timestamptz NOT NULL DEFAULT now()
                )""")
            done = {r["version"] for r in await conn.fetch(f"SELECT version FROM {self.table}")}
            applied = []
            for migration in self.migrations:
                if migration.version in done:
                    continue
                async with conn.transaction():
                    await conn.execute(migration.sql)
                    await conn.execute(
                        f"INSERT INTO {self.table} (version, name) VALUES ($1, $2)",
                        migration.version, migration.name)
                log.debug("migration applied", table=self.table, version=migration.version,
                          name=migration.name)
                applied.append(migration.version)
            return applied
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", self.lock_key)
