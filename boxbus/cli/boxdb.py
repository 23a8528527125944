"""Where a box's database is: one rule for every command that touches it.

1. ``--database-url``, when given;
2. else ``BOXBUS_DATABASE_URL`` (a process serves one box, so it names that box's database);
3. else the local stack's PostgreSQL, database ``<namespace>_<box>`` (what ``make demo``,
   ``box run`` and ``box migrate --box`` create there).

Whatever the source, a database that does not exist, does not answer or lacks the SDK's tables
is one readable error saying which database and what to do.
"""

from __future__ import annotations

import asyncpg

from bus.db import create_database, owner_url
from bus.errors import ConfigError, DatabaseUnavailable
from bus.naming import box_database as database_name
from bus.settings import Settings

# Databases of the stack that belong to no box.
_NOT_BOXES = {"postgres", "schema_registry"}


def _where(dsn: str) -> str:
    """A database URL without its credentials, for messages."""
    return dsn.rsplit("@", 1)[-1]


async def connect(dsn: str, *, box: str | None = None, what: str | None = None
                  ) -> asyncpg.Connection:
    """Open a connection, turning each way it can fail into an error that says what to do.
    ``what`` names the database in messages (box ``box``'s, by default)."""
    whose = what or (f"box {box}'s database" if box else "the database")
    try:
        return await asyncpg.connect(dsn, timeout=10)
    except asyncpg.InvalidCatalogNameError as exc:
        raise ConfigError(
            f"{whose} {_where(dsn)} does not exist",
            hint="check the database URL; on the local stack, `boxbus box migrate --box "
            f"{box or 'ID'}` without a URL creates a box's database",
        ) from exc
    except (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError) as exc:
        raise ConfigError(f"{whose} {_where(dsn)} refused the login: {exc}",
                          hint="check the user and password in the database URL") from exc
    except (OSError, TimeoutError, asyncpg.CannotConnectNowError) as exc:
        raise DatabaseUnavailable(
            f"{whose} at {_where(dsn)} does not answer ({exc.__class__.__name__}: {exc})",
            hint="start the local stack (`boxbus dev up`, `boxbus dev status`) or check the "
            "database URL",
        ) from exc


async def require_migrated(dsn: str, box: str) -> None:
    """Refuse a database without the SDK's tables (the relay and inbox would fail on every
    statement and retry forever)."""
    from connectors.box.migrations import pending

    conn = await connect(dsn, box=box)
    try:
        missing = await pending(conn)
    finally:
        await conn.close()
    if missing:
        raise ConfigError(
            f"box {box}'s database {_where(dsn)} lacks the SDK's migrations "
            f"{', '.join(map(str, missing))}",
            hint=f"run `boxbus box migrate --box {box}` (or with --database-url)",
        )


async def box_database(settings: Settings, box: str, given: str | None = None, *,
                       create: bool = False) -> str:
    """The URL of ``box``'s database by the rule above; ``create`` makes it on the local
    stack when it is missing there."""
    chosen = given or (settings.database_url.get_secret_value()
                       if settings.database_url is not None else None)
    if chosen:
        await (await connect(chosen, box=box)).close()  # exists and answers
        return chosen
    from bus.devstack import LocalStack

    info = LocalStack(settings).status()
    if info is None or info.database_url is None:
        raise ConfigError(
            f"boxbus does not know where box {box}'s database is",
            hint="pass --database-url postgresql://..., set BOXBUS_DATABASE_URL, or start the "
            "local stack (`boxbus dev up`), where each box has a database of its own")
    name = database_name(settings.topic_namespace, box)
    if create:
        try:
            return await create_database(info.database_url, name)
        except (OSError, asyncpg.PostgresError) as exc:
            raise DatabaseUnavailable(
                f"the local stack's PostgreSQL did not create {name}: {exc}",
                hint="`boxbus dev status` shows whether it runs; `boxbus dev up` starts it",
            ) from exc
    conn = await connect(info.database_url)
    try:
        names = sorted(r["datname"] for r in await conn.fetch(
            "SELECT datname FROM pg_database WHERE NOT datistemplate"))
    finally:
        await conn.close()
    if name in names:
        return owner_url(info.database_url, name)  # as the box's own role, no superuser
    raise ConfigError(
        f"box {box} has no database in network {settings.topic_namespace!r} on the local "
        f"stack (looked for {name})", hint=_known_boxes(settings.topic_namespace, box, names))


def _known_boxes(namespace: str, box: str, names: list[str]) -> str:
    prefix = database_name(namespace, "")
    ours = [n.removeprefix(prefix) for n in names if n.startswith(prefix)]
    if ours:
        return (f"boxes of {namespace!r} with a database: {', '.join(ours)} (database names "
                f"write '-' as '_'); a new box gets one with `boxbus box migrate --box {box}`")
    others = [n for n in names if n not in _NOT_BOXES]
    if others:
        shown = ", ".join(others[:6]) + (f" and {len(others) - 6} more" if len(others) > 6
                                          else "")
        return (f"no box of {namespace!r} has one; the stack's databases are {shown}: pass "
                f"--namespace NS (NS_BOX is a box's database), or `boxbus box migrate --box "
                f"{box}` for a new box")
    return f"no box has a database yet: `boxbus box migrate --box {box}` makes one"
