"""PostgreSQL on a private data directory, from the binaries that the ``pgserver`` wheel ships.

boxbus runs ``initdb`` and ``postgres`` itself (rather than through pgserver's helper) so that
the server listens on a chosen loopback port as well as a private socket, and so that the stack
knows its pid. PostgreSQL refuses to run as root; under root the server runs as an unprivileged
system user ``boxbus`` (created once), with its data outside root's home so that user can reach
it. The stack records where that data is, and ``down`` removes it.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import signal
import subprocess
import tempfile
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


def url(port: int, database: str = "postgres") -> str:
    return f"postgresql://{SUPERUSER}@{procs.LOOPBACK}:{port}/{database}"


@dataclass(frozen=True)
class PostgresHome:
    base: Path  # data and socket live here; removed by `down`
    log_path: Path
    port: int
    uid: int | None
    gid: int | None

    @property
    def data_dir(self) -> Path:
        return self.base / "data"

    @property
    def socket_dir(self) -> Path:
        return self.base / "sock"


def _ensure_system_user() -> tuple[int, int]:
    try:
        entry = pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        try:
            subprocess.run(
                ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                 SYSTEM_USER],
                check=True, capture_output=True, text=True,
            )
        except (OSError, subprocess.CalledProcessError) as exc:
            detail = getattr(exc, "stderr", None) or str(exc)
            raise PrerequisiteError(
                f"PostgreSQL cannot run as root, and creating the system user {SYSTEM_USER!r} "
                f"for it failed: {detail.strip()}",
                hint=f"create the user yourself (useradd --system {SYSTEM_USER}), run boxbus as "
                "a normal user, or set BOXBUS_DATABASE_URL to use your own PostgreSQL",
            ) from exc
        entry = pwd.getpwnam(SYSTEM_USER)
    return entry.pw_uid, entry.pw_gid


def prepare(run_dir: Path, port: int, existing: Path | None = None) -> PostgresHome:
    """Choose the folders of this stack's server (creating them) and the user it runs as;
    ``existing`` is the folder of a server started before (a restart keeps its data)."""
    binaries = bin_dir()
    log_path = run_dir / "postgres" / "postgres.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    uid: int | None = None
    gid: int | None = None
    if os.geteuid() == 0:
        uid, gid = _ensure_system_user()
        _check_reachable(binaries)
        # root's home is private: keep the cluster in a folder under the temp directory.
        base = existing if existing is not None and existing.is_dir() else Path(
            tempfile.mkdtemp(prefix="boxbus-pg-"))
        for path in (base, log_path.parent):
            os.chown(path, uid, gid)
        if log_path.exists():
            os.chown(log_path, uid, gid)
    else:
        base = run_dir / "postgres"
    home = PostgresHome(base=base, log_path=log_path, port=port, uid=uid, gid=gid)
    home.socket_dir.mkdir(mode=0o700, exist_ok=True)
    if uid is not None and gid is not None:
        os.chown(home.socket_dir, uid, gid)
    return home


def _check_reachable(binaries: Path) -> None:
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
            hint="read the log; `boxbus dev down` removes a half-made data directory",
            log_path=home.log_path,
        )


def start(home: PostgresHome) -> procs.ProcessRecord:
    argv = [
        str(bin_dir() / "postgres"), "-D", str(home.data_dir),
        "-h", procs.LOOPBACK, "-p", str(home.port), "-k", str(home.socket_dir),
        # A development server: durable enough to survive a process kill (fsync stays on for
        # the crash tests of later issues), small, and quiet.
        "-c", "max_connections=200", "-c", "shared_buffers=128MB",
        "-c", "logging_collector=off", "-c", "log_min_messages=warning",
    ]
    return procs.spawn(
        "postgres", argv, log_path=home.log_path, user=home.uid, group=home.gid,
        stop_signal=signal.SIGINT,
    )


async def wait_ready(port: int, record: procs.ProcessRecord, *, timeout: float = 30.0) -> None:
    async def accepts() -> bool:
        try:
            conn = await asyncpg.connect(url(port), timeout=2)
        except (OSError, asyncpg.PostgresError, TimeoutError):
            return False
        await conn.close()
        return True

    await procs.wait_until(accepts, what="PostgreSQL", records=[record], timeout=timeout,
                           hint="read the log; a port in use is the usual cause")
