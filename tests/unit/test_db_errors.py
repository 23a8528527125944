"""``bus.db.session_lost``: which errors mean the PostgreSQL session is gone (reconnect and do
the work again) and which are about the work itself. Pure logic: the exceptions are built
the way asyncpg builds them, no database runs."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import cast

import asyncpg
import asyncpg.exceptions as pg
import pytest

from bus.db import session_lost


@dataclass
class _Conn:
    """Just enough of a connection for the predicate: whether asyncpg has closed it."""

    closed: bool

    def is_closed(self) -> bool:
        return self.closed


def conn(*, closed: bool) -> asyncpg.Connection:
    return cast(asyncpg.Connection, _Conn(closed))


def server_error(sqlstate: str, message: str = "m") -> Exception:
    """An error as asyncpg makes it from the server's ErrorResponse fields."""
    error = asyncpg.PostgresError.new({"C": sqlstate, "M": message, "S": "FATAL"})
    assert isinstance(error, Exception)
    return error


LOST = [
    ConnectionRefusedError(111, "Connect call failed"),  # server not running
    ConnectionResetError(104, "Connection reset by peer"),
    OSError(113, "No route to host"),
    TimeoutError(),  # connect timed out
    asyncpg.InterfaceError("connection is closed"),
    asyncpg.InterfaceError("cannot perform operation: another operation is in progress"),
    # The relay's crash under fault injection: a FATAL message arrived between statements.
    asyncpg.InternalClientError("cannot switch to state 12; another operation (2) is in "
                                "progress"),
    asyncpg.ProtocolError("unexpected message"),
    pg.OutdatedSchemaCacheError("cached statement plan is invalid"),
    pg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
    pg.ConnectionFailureError("connection failure"),
    pg.ClientCannotConnectError("cannot connect"),
    pg.ProtocolViolationError("protocol violation"),
    pg.AdminShutdownError("terminating connection due to unexpected postmaster exit"),
    pg.CrashShutdownError("terminating connection because of crash of another process"),
    pg.CannotConnectNowError("the database system is starting up"),
    pg.DatabaseDroppedError("database dropped"),
    pg.IdleSessionTimeoutError("terminating connection due to idle-session timeout"),
    pg.IdleInTransactionSessionTimeoutError("idle-in-transaction timeout"),
]

NOT_LOST = [
    pg.UniqueViolationError("duplicate key value"),
    pg.SerializationError("could not serialize access"),  # retried, but on the same session
    pg.DeadlockDetectedError("deadlock detected"),
    pg.QueryCanceledError("canceling statement due to statement timeout"),
    pg.InFailedSQLTransactionError("current transaction is aborted"),
    pg.UndefinedTableError('relation "boxbus_outbox" does not exist'),
    pg.TooManyConnectionsError("sorry, too many clients already"),
    pg.DataError("invalid input"),  # SQLSTATE 22000
    asyncpg.ClientConfigurationError("bad setting"),  # the caller's mistake, not the session
    asyncpg.UnsupportedServerFeatureError("not supported"),
    ValueError("bad argument"),
    RuntimeError("a handler's own failure"),
    KeyError("x"),
]


@pytest.mark.parametrize("error", LOST, ids=lambda e: type(e).__name__)
def test_a_lost_session_is_recognised(error: BaseException) -> None:
    assert session_lost(error)


@pytest.mark.parametrize("error", NOT_LOST, ids=lambda e: type(e).__name__)
def test_errors_about_the_work_are_not_a_lost_session(error: BaseException) -> None:
    assert not session_lost(error)


def test_every_connection_exception_of_asyncpg_counts() -> None:
    """Class 08 as a whole, including classes asyncpg may add, and codes it does not know."""
    classes: list[type[asyncpg.PostgresError]] = [
        cls for _, cls in inspect.getmembers(pg, inspect.isclass)
        if issubclass(cls, asyncpg.PostgresError)
        and str(getattr(cls, "sqlstate", "")).startswith("08")]
    assert len(classes) >= 7
    for cls in classes:
        assert session_lost(cls("m")), cls.__name__
    unknown = server_error("08Z99")
    assert type(unknown).__name__ == "UnknownPostgresError"
    assert session_lost(unknown)


def test_errors_built_from_the_servers_messages() -> None:
    """What a backend sends when its postmaster was SIGKILLed, or while it restarts."""
    assert session_lost(server_error("57P01", "terminating connection due to unexpected "
                                              "postmaster exit"))
    assert session_lost(server_error("57P02"))
    assert session_lost(server_error("57P03", "the database system is in recovery mode"))
    assert not session_lost(server_error("23505", "duplicate key value"))
    assert not session_lost(server_error("57014", "canceling statement"))


def test_a_closed_connection_is_proof_whatever_was_raised() -> None:
    """Code using the connection may wrap the error in its own (a handler's RuntimeError)."""
    closed = conn(closed=True)
    assert session_lost(RuntimeError("could not save the sales order"), closed)
    assert session_lost(KeyError("x"), closed)
    assert session_lost(pg.UniqueViolationError("duplicate key value"), closed)


def test_with_an_open_connection_only_asyncpg_protocol_and_server_errors_count() -> None:
    """A socket error or a timeout while the connection is open came from other I/O (a web
    service the handler calls), and an InterfaceError from a misuse of the connection that a
    new session would not cure; they are the caller's errors."""
    open_ = conn(closed=False)
    assert not session_lost(ConnectionRefusedError(111, "web service down"), open_)
    assert not session_lost(TimeoutError(), open_)
    assert not session_lost(
        asyncpg.InterfaceError("cannot perform operation: another operation is in progress"),
        open_)
    assert not session_lost(RuntimeError("a handler's own failure"), open_)
    assert not session_lost(pg.UniqueViolationError("duplicate key value"), open_)
    assert session_lost(asyncpg.InternalClientError("cannot switch to state 15"), open_)
    assert session_lost(pg.AdminShutdownError("terminating connection"), open_)
    assert session_lost(pg.ConnectionDoesNotExistError("closed mid-operation"), open_)
