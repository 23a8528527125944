"""The head office's dashboard and the analytics HTTP API: a small Starlette app over the
read-only :class:`~processors.analytics.reader.Reader`.

- ``GET /`` the dashboard (static page, its script and the vendored Chart.js: nothing is
  loaded from elsewhere, and the Content-Security-Policy says so to the browser);
- ``GET /api/queries`` the named queries with their dimensions;
- ``GET /api/<name>?by=..&from=..&to=..&region=..&limit=..`` a query's answer, the same JSON
  as ``boxbus analytics query NAME --json``; a wrong parameter is a 400 with what to do;
- ``GET /api/stream`` server-sent events: ``commit`` each time the aggregator commits (at most
  one every ``coalesce`` seconds), a comment line every 15 s to keep proxies from closing it;
- ``GET /healthz``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from decimal import Decimal, InvalidOperation
from importlib import resources

import asyncpg
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from bus.errors import BoxbusError
from bus.log import get_logger
from processors.analytics.queries import QUERIES, Filters, moment, query_named
from processors.analytics.reader import Commits, Reader

log = get_logger(__name__)

STATIC = resources.files("processors.analytics") / "static"
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                               "style-src 'self'; script-src 'self'; connect-src 'self'; "
                               "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
HEARTBEAT_S = 15.0


def filters_of(request: Request) -> Filters:
    """The query string as filters; a ValueError-like BoxbusError says what is wrong."""
    params = request.query_params
    by = tuple(d.strip() for value in params.getlist("by") for d in value.split(",")
               if d.strip())
    limit = params.get("limit")
    below = params.get("below")
    if limit and (not limit.isdigit() or not 1 <= int(limit) <= 100_000):
        raise _BadRequest(f"limit={limit!r} is not a number of rows", "1 to 100000")
    try:
        return Filters(
            by=by, start=moment(params["from"], "from") if params.get("from") else None,
            end=moment(params["to"], "to") if params.get("to") else None,
            regions=tuple(r for r in params.getlist("region") if r),
            limit=int(limit) if limit else None,
            below=Decimal(below) if below else Decimal(10),
            at=moment(params["at"], "at") if params.get("at") else None)
    except (ValueError, InvalidOperation):
        raise _BadRequest("limit and below must be numbers",
                          "e.g. limit=10, below=5.5") from None


class _BadRequest(Exception):
    def __init__(self, error: str, hint: str) -> None:
        super().__init__(error)
        self.hint = hint


def create_app(dsn: str, *, coalesce: float = 0.25) -> Starlette:
    reader = Reader(dsn)
    commits = Commits(dsn)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with reader:
            await commits.start()
            try:
                yield
            finally:
                await commits.stop()

    async def index(request: Request) -> Response:
        return FileResponse(str(STATIC / "index.html"), headers=SECURITY_HEADERS)

    async def catalogue(request: Request) -> Response:
        return JSONResponse({"queries": [
            {"name": q.name, "title": q.title, "description": q.description,
             "by": list(q.dimensions), "default_by": list(q.default_by)}
            for q in QUERIES.values()]}, headers=SECURITY_HEADERS)

    async def answer(request: Request) -> Response:
        name = request.path_params["name"]
        try:
            query_named(name)
            result = await reader.query(name, filters_of(request))
        except _BadRequest as exc:
            return _error(400, str(exc), exc.hint)
        except BoxbusError as exc:
            status = 404 if name not in QUERIES else 400
            return _error(status, exc.message, exc.hint)
        except asyncpg.DataError as exc:
            return _error(400, f"the database refused a value: {exc}", "check the parameters")
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("analytics query failed", query=name, error=str(exc))
            return _error(503, f"the analytics database failed: {exc.__class__.__name__}",
                          "try again; if it persists, look at the server's log")
        return JSONResponse(result, headers=SECURITY_HEADERS)

    async def stream(request: Request) -> Response:
        try:
            listening = commits.listener()
            queue = listening.__enter__()
        except BoxbusError as exc:
            return _error(503, exc.message, exc.hint)

        async def events() -> AsyncIterator[str]:
            try:
                yield "retry: 2000\n\n"
                last = 0.0
                while True:
                    try:
                        consumer = await asyncio.wait_for(queue.get(), HEARTBEAT_S)
                    except TimeoutError:
                        yield ": still here\n\n"
                        continue
                    wait = last + coalesce - time.monotonic()
                    if wait > 0:  # many commits a second: one event for them all
                        await asyncio.sleep(wait)
                        with contextlib.suppress(asyncio.QueueEmpty):
                            queue.get_nowait()
                    last = time.monotonic()
                    data = json.dumps({"consumer": consumer, "at": time.time()})
                    yield f"event: commit\ndata: {data}\n\n"
            finally:
                listening.__exit__(None, None, None)

        return StreamingResponse(events(), media_type="text/event-stream", headers={
            **SECURITY_HEADERS, "Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    async def health(request: Request) -> Response:
        return JSONResponse({"ok": True})

    return Starlette(routes=[
        Route("/", index),
        Route("/healthz", health),
        Route("/api/queries", catalogue),
        Route("/api/stream", stream),
        Route("/api/{name}", answer),
        Mount("/static", StaticFiles(directory=str(STATIC)), name="static"),
    ], lifespan=lifespan)


def _error(status: int, error: str, hint: str | None) -> Response:
    return JSONResponse({"error": error, "hint": hint}, status_code=status,
                        headers=SECURITY_HEADERS)


def serve_forever(dsn: str, host: str, port: int) -> None:
    """Run the app with uvicorn until SIGINT/SIGTERM."""
    import uvicorn

    config = uvicorn.Config(create_app(dsn), host=host, port=port, log_level="warning",
                            access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    server.run()
