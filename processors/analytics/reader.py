"""Read-only access to the analytics database for the command line, the HTTP API and the
dashboard: a small pool, every query in a read-only transaction with a statement timeout, and
the aggregator's commit notifications (PostgreSQL sends them only when a transaction commits,
so whoever hears one reads committed numbers)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from types import TracebackType
from typing import Any

import asyncpg

from bus.errors import ConfigError
from bus.log import get_logger
from processors.aggregator.store import CHANNEL
from processors.analytics.queries import Filters, run

log = get_logger(__name__)

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


class Commits:
    """The aggregator's commit notifications for any number of listeners (the dashboards'
    event streams) over one LISTEN connection, made again when it is lost. Each listener has
    a queue of one item: a slow one finds one item for many commits."""

    RETRY_S = 1.0

    def __init__(self, dsn: str, *, max_listeners: int = 200) -> None:
        self.dsn = dsn
        self.max_listeners = max_listeners
        self._queues: set[asyncio.Queue[str]] = set()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @contextlib.contextmanager
    def listener(self) -> Iterator[asyncio.Queue[str]]:
        if len(self._queues) >= self.max_listeners:
            raise ConfigError(f"{self.max_listeners} dashboards already listen",
                              hint="close some, or run another `boxbus analytics serve`")
        queue: asyncio.Queue[str] = asyncio.Queue(maxsize=1)
        self._queues.add(queue)
        try:
            yield queue
        finally:
            self._queues.discard(queue)

    def _heard(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        for queue in self._queues:
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(payload)

    async def _listen(self) -> None:
        while True:
            lost = asyncio.Event()
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(self.dsn)
                conn.add_termination_listener(lambda _conn, lost=lost: lost.set())
                await conn.add_listener(CHANNEL, self._heard)
                self._heard(None, 0, CHANNEL, "listening")  # what changed while away
                await lost.wait()
                log.warning("the analytics database's notifications were lost; listening again")
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("cannot listen to the analytics database; trying again",
                            error=str(exc))
            finally:
                if conn is not None:
                    conn.terminate()
            await asyncio.sleep(self.RETRY_S)
