"""PostgreSQL on a private data directory, from the binaries that the ``pgserver`` wheel ships.

boxbus runs ``initdb`` and ``postgres`` itself (rather than through pgserver's helper) so that
the server listens on a chosen loopback port as well as a private socket, and so that the stack
knows its pid. PostgreSQL refuses to run as root; under root the server runs as an unprivileged
system user ``boxbus`` (created once), with its data outside root's home so that user can reach it.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from bus.devstack import procs
from bus.errors import ComponentFailed, PrerequisiteError

SYSTEM_USER = "boxbus"
SUPERUSER = "postgres"


def bin_dir() -> Path:
    # Found without importing pgserver: its import starts work (platformdirs, locks) we don't use.
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise PrerequisiteError(
            "the pgserver package (embedded PostgreSQL binaries) is not installed",
            hint="run `make setup`, or set BOXBUS_DATABASE_URL to use your own PostgreSQL",
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


@dataclass(frozen=True)
class PostgresHome:
    data_dir: Path
    socket_dir: Path
    log_path: Path
    port: int
    uid: int | None
    gid: int | None

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"


def run_dir_tag(run_dir: Path) -> str:
    """Names the data folder kept outside the run directory (under root) after that directory."""
    return hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:12]


def _ensure_system_user() -> tuple[int, int]:
    try:
        entry = pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
             SYSTEM_USER],
            check=True, capture_output=True,
        )
        entry = pwd.getpwnam(SYSTEM_USER)
    return entry.pw_uid, entry.pw_gid


def prepare(run_dir: Path, port: int) -> PostgresHome:
    """Choose the folders of this stack's server (creating them) and the user it runs as."""
    log_path = run_dir / "postgres" / "postgres.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    uid: int | None = None
    gid: int | None = None
    if os.geteuid() == 0:
        uid, gid = _ensure_system_user()
        # root's home is private; keep the cluster under /tmp, named after the run directory.
        base = Path(tempfile.gettempdir()) / f"boxbus-pg-{run_dir_tag(run_dir)}"
        base.mkdir(mode=0o700, exist_ok=True)
        os.chown(base, uid, gid)
        os.chown(log_path.parent, uid, gid)
        if log_path.exists():
            os.chown(log_path, uid, gid)
        _check_reachable(bin_dir(), uid)
    else:
        base = run_dir / "postgres"
    home = PostgresHome(
        data_dir=base / "data", socket_dir=base / "sock", log_path=log_path,
        port=port, uid=uid, gid=gid,
    )
    home.socket_dir.mkdir(mode=0o700, exist_ok=True)
    if uid is not None and gid is not None:
        os.chown(home.socket_dir, uid, gid)
    return home


def _check_reachable(binaries: Path, uid: int) -> None:
    """The postgres user must be able to reach the binaries inside the virtualenv."""
    for parent in [binaries, *binaries.parents]:
        if not parent.stat().st_mode & 0o001:
            raise PrerequisiteError(
                f"the PostgreSQL binaries in {binaries} are not reachable by the unprivileged "
                f"user {SYSTEM_USER!r}: {parent} is not world-traversable",
                hint=f"chmod o+x {parent}, keep the virtualenv outside a private home, or set "
                "BOXBUS_DATABASE_URL to use your own PostgreSQL",
            )


def initdb(home: PostgresHome) -> None:
    if (home.data_dir / "PG_VERSION").exists():
        return
    with open(home.log_path, "ab") as log:
        result = subprocess.run(
            [str(bin_dir() / "initdb"), "-D", str(home.data_dir), "-U", SUPERUSER,
             "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync"],
            stdout=log, stderr=subprocess.STDOUT, user=home.uid, group=home.gid,
            extra_groups=[] if home.uid is not None else None, check=False,
        )
    if result.returncode != 0:
        raise ComponentFailed(
            f"initdb failed (exit {result.returncode})",
            hint="read the log; boxbus dev down removes a half-made data directory",
            log_path=home.log_path,
        )


def start(home: PostgresHome) -> procs.ProcessRecord:
    argv = [
        str(bin_dir() / "postgres"), "-D", str(home.data_dir),
        "-h", "127.0.0.1", "-p", str(home.port), "-k", str(home.socket_dir),
        # A development server: durable enough to survive a process kill (fsync stays on for
        # the crash tests of later issues), small, and quick to check-point.
        "-c", "max_connections=200", "-c", "shared_buffers=128MB",
        "-c", "synchronous_commit=on", "-c", "listen_addresses=127.0.0.1",
        "-c", "logging_collector=off", "-c", "log_min_messages=warning",
    ]
    return procs.spawn(
        "postgres", argv, log_path=home.log_path, user=home.uid, group=home.gid
    )


async def wait_ready(url: str, record: procs.ProcessRecord, *, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if not procs.is_alive(record):
            raise ComponentFailed(
                f"PostgreSQL (pid {record.pid}) exited while starting:\n"
                + procs.tail(record.log_path),
                hint="a port in use is the usual cause; read the log",
                log_path=record.log_path,
            )
        try:
            conn = await asyncpg.connect(url, timeout=2)
        except (TimeoutError, OSError, asyncpg.PostgresError):
            if time.monotonic() > deadline:
                raise ComponentFailed(
                    f"PostgreSQL at {url} did not accept connections within {timeout:.0f} s",
                    log_path=record.log_path,
                ) from None
            await asyncio.sleep(0.05)
            continue
        await conn.close()
        return


def remove(run_dir: Path) -> None:
    """Delete the data kept outside the run directory (under root), if any."""
    shutil.rmtree(Path(tempfile.gettempdir()) / f"boxbus-pg-{run_dir_tag(run_dir)}",
                  ignore_errors=True)
