"""Background processes of the local stack: start them detached, recognise them later, stop them.

A process is remembered by its pid *and* its start time (field 22 of ``/proc/<pid>/stat``), so a
pid the kernel has since handed to another program is never signalled by ``dev down``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from bus.errors import ComponentFailed


class ProcessRecord(BaseModel):
    """What the run state keeps of one process the stack started."""

    model_config = ConfigDict(frozen=True)

    name: str
    pid: int
    start_ticks: int
    argv: list[str]  # kept so a crashed process can be started again exactly as it was
    log_path: Path
    # PostgreSQL takes SIGINT as "fast shutdown"; SIGTERM would wait for every client to leave.
    stop_signal: int = signal.SIGTERM
    env: dict[str, str] = {}
    cwd: Path | None = None
    user: int | None = None
    group: int | None = None
    # Where this start's output begins in the log (logs are appended to across restarts).
    log_offset: int = 0


def _start_ticks(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces; the fields after its closing paren are plain.
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":  # a zombie has exited already
        return None
    return int(fields[19])


def spawn(
    name: str,
    argv: Sequence[str],
    *,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    user: int | None = None,
    group: int | None = None,
    stop_signal: int = signal.SIGTERM,
) -> ProcessRecord:
    """Start ``argv`` in its own session with stdout and stderr appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, **(env or {})}
    with open(log_path, "ab") as log:
        offset = log.seek(0, os.SEEK_END)
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=cwd,
            start_new_session=True,
            user=user,
            group=group,
            extra_groups=[] if user is not None else None,
        )
    ticks = _start_ticks(proc.pid)
    # The child is not waited for by this process; the kernel reaps it when we exit (or via the
    # SIGCHLD default), and liveness is read from /proc.
    return ProcessRecord(
        name=name, pid=proc.pid, start_ticks=ticks or 0, argv=list(argv), log_path=log_path,
        stop_signal=stop_signal, env=dict(env or {}), cwd=cwd, user=user, group=group,
        log_offset=offset,
    )


def respawn(record: ProcessRecord) -> ProcessRecord:
    """Start a process again with the command, environment and user it was started with."""
    return spawn(record.name, record.argv, log_path=record.log_path, env=record.env,
                 cwd=record.cwd, user=record.user, group=record.group,
                 stop_signal=record.stop_signal)


def is_alive(record: ProcessRecord) -> bool:
    ticks = _start_ticks(record.pid)
    return ticks is not None and ticks == record.start_ticks


def reap(record: ProcessRecord) -> None:
    """Collect the exit status if the process is our own child, so it leaves no zombie."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(record.pid, os.WNOHANG)


def signal_process(record: ProcessRecord, sig: int) -> bool:
    """Send ``sig`` to the process if it is still the one we started."""
    if not is_alive(record):
        return False
    try:
        os.kill(record.pid, sig)
    except ProcessLookupError:
        return False
    return True


def stop(record: ProcessRecord, *, timeout: float = 15.0) -> None:
    """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL."""
    stop_all([record], timeout=timeout)


def stop_all(records: Sequence[ProcessRecord], *, timeout: float = 15.0) -> None:
    """Ask all to stop at once (Kafka nodes of one cluster wait for each other while shutting
    down), wait up to ``timeout`` seconds for all, then SIGKILL what is left."""
    running = [r for r in records if signal_process(r, r.stop_signal)]
    deadline = time.monotonic() + timeout
    while running and time.monotonic() < deadline:
        for record in running:
            reap(record)
        running = [r for r in running if is_alive(r)]
        time.sleep(0.05)
    for record in running:
        kill(record)


def kill(record: ProcessRecord) -> None:
    """SIGKILL, as a crash would; returns when the process is gone."""
    signal_process(record, signal.SIGKILL)
    while is_alive(record):
        reap(record)
        time.sleep(0.02)


LOOPBACK = "127.0.0.1"


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def free_ports(count: int) -> list[int]:
    """Ports the kernel says are free now (for tests that must not clash with a dev stack)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((LOOPBACK, 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def tail(path: Path, lines: int = 15, *, since: int = 0) -> str:
    """The last ``lines`` lines of a log, from byte ``since`` on (one start's output)."""
    try:
        with open(path, "rb") as log:
            log.seek(since)
            text = log.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


async def wait_until(
    probe: Callable[[], Awaitable[bool]],
    *,
    what: str,
    records: Sequence[ProcessRecord],
    timeout: float,
    hint: str,
) -> None:
    """Poll ``probe`` (a real client request) until it answers True. A process of ``records``
    that exits meanwhile, or the deadline, ends the wait with ComponentFailed naming the log."""
    deadline = time.monotonic() + timeout
    while True:
        for record in records:
            if not is_alive(record):
                reap(record)
                raise ComponentFailed(
                    f"{what} (process {record.name}, pid {record.pid}) exited while starting:\n"
                    + (tail(record.log_path, since=record.log_offset)
                       or "(it wrote nothing to its log)"),
                    hint=hint, log_path=record.log_path,
                )
        if await probe():
            return
        if time.monotonic() > deadline:
            raise ComponentFailed(
                f"{what} did not answer within {timeout:.0f} s", hint=hint,
                log_path=records[0].log_path if records else None,
            )
        await asyncio.sleep(0.05)
