"""Read-only access to the analytics database for the command line, the HTTP API and the
dashboard: a small pool, every query in a read-only transaction with a statement timeout, and
the aggregator's commit notifications (PostgreSQL sends them only when a transaction commits,
so whoever hears one reads committed numbers)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any

import asyncpg

from bus.errors import ConfigError
from processors.aggregator.store import CHANNEL
from processors.analytics.queries import Filters, run

STATEMENT_TIMEOUT_MS = 15_000


class Reader:
    def __init__(self, dsn: str, *, max_size: int = 4) -> None:
        self.dsn = dsn
        self.max_size = max_size
        self._pool: asyncpg.Pool | None = None

    async def __aenter__(self) -> Reader:
        try:
            self._pool = await asyncpg.create_pool(
                self.dsn, min_size=1, max_size=self.max_size,
                server_settings={"statement_timeout": str(STATEMENT_TIMEOUT_MS),
                                 "default_transaction_read_only": "on"})
        except asyncpg.InvalidCatalogNameError:
            raise ConfigError("the analytics database does not exist",
                              hint="run `boxbus aggregator run` for this namespace first, "
                              "or pass --database-url") from None
        except (OSError, asyncpg.PostgresError) as exc:
            raise ConfigError(f"cannot reach the analytics database: {exc}",
                              hint="check --database-url / BOXBUS_DATABASE_URL, or start "
                              "the local stack (`boxbus dev up`)") from None
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._pool is not None:
            await self._pool.close()

    async def query(self, name: str, filters: Filters) -> dict[str, Any]:
        assert self._pool is not None, "use Reader in `async with`"
        async with self._pool.acquire() as conn, conn.transaction(readonly=True):
            return await run(conn, name, filters)

    @contextlib.asynccontextmanager
    async def commits(self) -> AsyncIterator[asyncio.Queue[str]]:
        """A queue that gets an item each time the aggregator commits (coalesced: a slow
        reader finds one item for many commits)."""
        conn = await asyncpg.connect(self.dsn)
        queue: asyncio.Queue[str] = asyncio.Queue(maxsize=1)

        def heard(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(payload)

        await conn.add_listener(CHANNEL, heard)
        try:
            yield queue
        finally:
            with contextlib.suppress(Exception):
                await conn.remove_listener(CHANNEL, heard)
            await conn.close()
