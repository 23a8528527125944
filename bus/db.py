"""PostgreSQL helpers shared by the stack and the box SDK."""

from __future__ import annotations

import hashlib
import hmac
import re
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg

from bus.errors import ConfigError

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,62}$")
_ROLE_NOTE = "boxbus: owner of a box database"  # (no quote: it goes into SQL as is)


async def create_database(server_url: str, name: str) -> str:
    """Create database ``name`` on the server at ``server_url`` unless it exists, owned by a
    role of the same name that logs in with a password and may connect to it alone (other
    boxes' roles may not: CONNECT is revoked from PUBLIC); the URL to it as that role.

    One database and one role per box is the model of the SDK: a box needs no superuser. The
    role's password is derived from the server URL's password and the name (HMAC-SHA-256), so
    asking again gives the same URL and no copy of it needs keeping.
    """
    if not _NAME.match(name):
        raise ConfigError(
            f"{name!r} is not a usable database name",
            hint="use letters, digits, '_' and '-' (at most 63), starting with a letter or '_'",
        )
    password = role_password(server_url, name)
    conn = await asyncpg.connect(server_url)
    try:
        role = await conn.fetchrow(
            "SELECT rolsuper OR rolcreaterole OR rolcreatedb AS powerful, "
            "shobj_description(oid, 'pg_authid') AS note FROM pg_roles WHERE rolname = $1",
            name)
        if role is not None and (role["powerful"] or role["note"] != _ROLE_NOTE):
            raise ConfigError(
                f"a PostgreSQL role named {name!r} exists and is not a box database's owner "
                "made by boxbus", hint="choose another box or database name")
        # (A hex password needs no quoting; identifiers are quoted.)
        if role is None:
            await conn.execute(f"CREATE ROLE \"{name}\" LOGIN NOSUPERUSER NOCREATEDB "
                               f"NOCREATEROLE PASSWORD '{password}'")
            await conn.execute(f"COMMENT ON ROLE \"{name}\" IS '{_ROLE_NOTE}'")
        else:
            await conn.execute(f"ALTER ROLE \"{name}\" PASSWORD '{password}'")
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{name}" OWNER "{name}"')
            await conn.execute(f'REVOKE CONNECT ON DATABASE "{name}" FROM PUBLIC')
    finally:
        await conn.close()
    return owner_url(server_url, name)


async def drop_database(server_url: str, name: str) -> bool:
    """Drop database ``name`` and its role, made by :func:`create_database` (benchmarks and
    tests clean up after themselves); whether it existed. A role boxbus did not make is
    refused, as in :func:`create_database`; its sessions are ended first."""
    conn = await asyncpg.connect(server_url)
    try:
        role = await conn.fetchrow(
            "SELECT shobj_description(oid, 'pg_authid') AS note FROM pg_roles "
            "WHERE rolname = $1", name)
        if role is None:
            return False
        if role["note"] != _ROLE_NOTE:
            raise ConfigError(f"the PostgreSQL role {name!r} is not a box database's owner "
                              "made by boxbus: not dropped")
        await conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                           "WHERE datname = $1 AND pid <> pg_backend_pid()", name)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await conn.execute(f'DROP ROLE IF EXISTS "{name}"')
    finally:
        await conn.close()
    return True


def role_password(server_url: str, name: str) -> str:
    secret = urlsplit(server_url).password
    if not secret:
        raise ConfigError(
            "the database server's URL carries no password, and boxbus derives each box "
            "role's password from it", hint="give the server URL with its password "
            "(postgresql://user:password@host/db)")
    return hmac.new(secret.encode(), name.encode(), hashlib.sha256).hexdigest()[:32]


def owner_url(server_url: str, name: str) -> str:
    """The URL of database ``name`` as its own role (see :func:`create_database`)."""
    parts = urlsplit(server_url)
    host = parts.hostname or "localhost"
    if ":" in host:
        host = f"[{host}]"  # an IPv6 address
    netloc = f"{quote(name)}:{role_password(server_url, name)}@{host}" + (
        f":{parts.port}" if parts.port else "")
    # The server's query may carry its own login (user=, password=): only TLS settings pass.
    kept = "&".join(p for p in parts.query.split("&") if p.startswith("ssl"))
    return urlunsplit((parts.scheme, netloc, f"/{name}", kept, ""))


# Server errors (by SQLSTATE) that end the session: the server sends one as a FATAL message
# and closes the connection.
_SESSION_ENDING_SQLSTATES = frozenset({
    "57P01",  # admin_shutdown: a fast or smart shutdown, pg_terminate_backend(), and the
              # backends' "unexpected postmaster exit" when the postmaster was SIGKILLed
    "57P02",  # crash_shutdown: another server process crashed; every backend is reset
    "57P03",  # cannot_connect_now: starting up, in crash recovery, or shutting down
    "57P04",  # database_dropped: the session's database is gone
    "57P05",  # idle_session_timeout
    "25P03",  # idle_in_transaction_session_timeout: the session ends, not only the transaction
})

# InterfaceErrors that report a mistake of the caller (a bad argument, an unsupported
# setting), not the state of the connection: retrying them on a new session changes nothing.
_CALLER_MISTAKES: tuple[type[Exception], ...] = (
    ValueError,  # asyncpg's DataError and ClientConfigurationError are ValueErrors too
    asyncpg.UnsupportedClientFeatureError,
    asyncpg.UnsupportedServerFeatureError,
)


def session_lost(exc: BaseException, conn: asyncpg.Connection | None = None) -> bool:
    """Whether ``exc`` means that the PostgreSQL session is lost or unusable: the work done in
    it is gone (an open transaction rolled back) and a new connection is the only way on.

    Callers treat this as "the database is away", never as a problem of the data: they drop
    the connection, wait a little and do the work again on a new one. asyncpg reports a lost
    session in several ways, depending on the moment the connection broke:

    - ``OSError`` (``ConnectionRefusedError``, ``ConnectionResetError``...): connecting to a
      server that is not running, or a socket that broke outside an operation;
    - ``TimeoutError``: connecting to a server that does not answer (asyncpg's ``timeout``);
    - ``asyncpg.InterfaceError`` ("connection is closed", "another operation is in progress"):
      a connection asyncpg has already closed after the server went away, or one left in an
      undefined state by an interrupted operation. Its subclasses for wrong arguments and
      unsupported features are the caller's mistakes and do not count;
    - ``asyncpg.InternalClientError`` and its subclasses such as ``ProtocolError``: the
      protocol state machine met something it did not expect, e.g. "cannot switch to state
      12; another operation (2) is in progress" when the server's FATAL message arrived
      between two statements and the socket was not closed yet. asyncpg aborts the
      connection right after raising it;
    - a ``PostgresError`` of SQLSTATE class 08 (connection exception), among them
      ``ConnectionDoesNotExistError`` ("connection was closed in the middle of operation",
      raised when the server dies during a statement);
    - a ``PostgresError`` whose SQLSTATE ends the session (57P01-57P05, 25P03), among them
      ``AdminShutdownError``, ``CrashShutdownError`` and ``CannotConnectNowError`` (a server
      that is restarting or recovering from a crash).

    ``conn`` is the connection the failing code used, when that code may also do other I/O
    (an inbox handler that calls a web service, say). A closed ``conn`` is then proof enough
    whatever was raised (the code may have wrapped the error in its own), and a socket error,
    a timeout or an ``InterfaceError`` count only when ``conn`` is closed: with ``conn`` open
    they came from somewhere else, or from a misuse of ``conn`` that a new session would not
    cure.
    """
    if conn is not None and conn.is_closed():
        return True
    if isinstance(exc, asyncpg.PostgresError):
        sqlstate = getattr(exc, "sqlstate", None) or ""
        return sqlstate.startswith("08") or sqlstate in _SESSION_ENDING_SQLSTATES
    if isinstance(exc, asyncpg.InternalClientError):
        return True
    if conn is not None:
        return False
    if isinstance(exc, asyncpg.InterfaceError):
        return not isinstance(exc, _CALLER_MISTAKES)
    return isinstance(exc, OSError | TimeoutError)


async def end_session(conn: asyncpg.Connection, *, timeout: float = 5.0) -> None:
    """Close ``conn``; a session that cannot be closed politely (the server is gone, the
    protocol is stuck) is cut instead, which ends it on the server just as well. Never
    raises, so that a ``finally`` that calls it keeps the error that ended the session."""
    try:
        await conn.close(timeout=timeout)
    except Exception:
        conn.terminate()
