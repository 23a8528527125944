"""PostgreSQL on a private data directory, from the binaries that the ``pgserver`` wheel ships.

boxbus runs ``initdb`` and ``postgres`` itself (rather than through pgserver's helper) so that
the server listens on a chosen loopback port as well as a private socket, and so that the stack
knows its pid. PostgreSQL refuses to run as root; under root the server runs as an unprivileged
system user ``boxbus`` (created once), with its data outside root's home so that user can reach
it. The stack records where that data is, and ``down`` removes it.

That user must also reach the binaries. A checkout in a private directory (root's home, any
``mktemp -d``) keeps the virtualenv, and the wheel's binaries with it, out of its reach; then
the installation (26 MB) is copied next to the data, root-owned and read-only for the server,
and removed with it. Nothing in the user's tree has its permissions changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import pwd
import secrets
import shutil
import signal
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


def install_dir(given: Path | None = None) -> Path:
    """The PostgreSQL installation to run (``bin/``, ``lib/``, ``share/``): ``given``
    (BOXBUS_POSTGRES_INSTALL_DIR), else the one the pgserver wheel ships."""
    if given is not None:
        if not (given / "bin" / "postgres").is_file():
            raise PrerequisiteError(
                f"{given} holds no PostgreSQL installation (no bin/postgres)",
                hint="point BOXBUS_POSTGRES_INSTALL_DIR at a folder with bin/, lib/ and share/ "
                "of PostgreSQL, or unset it to use the embedded one",
            )
        return given
    # Found without importing pgserver: its import starts work (platformdirs, locks) we don't use.
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise PrerequisiteError(
            "the pgserver package (embedded PostgreSQL binaries) is not installed",
            hint="pip install 'boxbus[stack]' (a checkout: `make setup`), or set "
            "BOXBUS_DATABASE_URL to use your own PostgreSQL",
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall"


def url(port: int, database: str = "postgres", password: str | None = None) -> str:
    login = f"{SUPERUSER}:{password}" if password else SUPERUSER
    return f"postgresql://{login}@{procs.LOOPBACK}:{port}/{database}"


def superuser_password(run_dir: Path) -> str:
    """The superuser's password of this stack: made once, kept in the run directory (0600).
    Connections over TCP need a password (scram-sha-256); only the server's own socket
    trusts its user."""
    path = run_dir / "postgres" / "superuser-password"
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    password = secrets.token_hex(16)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(password)
    return password


@dataclass(frozen=True)
class PostgresHome:
    base: Path  # data and socket live here; removed by `down`
    install: Path  # the installation the server runs from (a copy under ``base`` if staged)
    log_path: Path
    port: int
    uid: int | None
    gid: int | None

    @property
    def bin_dir(self) -> Path:
        return self.install / "bin"

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


def prepare(run_dir: Path, port: int, existing: Path | None = None,
            install: Path | None = None) -> PostgresHome:
    """Choose the folders of this stack's server (creating them) and the user it runs as;
    ``existing`` is the folder of a server started before (a restart keeps its data)."""
    source = install_dir(install)
    log_path = run_dir / "postgres" / "postgres.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    uid: int | None = None
    gid: int | None = None
    if os.geteuid() == 0:
        uid, gid = _ensure_system_user()
        # root's home is private: keep the cluster in a folder under the temp directory.
        base = existing if existing is not None and existing.is_dir() else Path(
            tempfile.mkdtemp(prefix="boxbus-pg-"))
        for path in (base, log_path.parent):
            os.chown(path, uid, gid)
        if log_path.exists():
            os.chown(log_path, uid, gid)
        runnable = source if _traversable_by_others(source) else _stage(source, base)
    else:
        base = run_dir / "postgres"
        runnable = source
    home = PostgresHome(base=base, install=runnable, log_path=log_path, port=port, uid=uid,
                        gid=gid)
    home.socket_dir.mkdir(mode=0o700, exist_ok=True)
    if uid is not None and gid is not None:
        os.chown(home.socket_dir, uid, gid)
    return home


def _traversable_by_others(folder: Path) -> bool:
    """Can a user other than the owner reach ``folder`` (every folder above it o+x)?"""
    return all(parent.stat().st_mode & 0o001 for parent in [folder, *folder.parents])


def _stage(source: Path, base: Path) -> Path:
    """A copy of the installation under ``base`` (which the server's user owns), for a source
    that user cannot reach. Kept across restarts of the same server; root owns the files.

    The wheel's binaries find their shared libraries through an rpath relative to themselves
    (``$ORIGIN/../../../pgserver.libs``, auditwheel's layout), so the copy keeps the folder
    of the package and its ``.libs`` sibling side by side."""
    site = base / "site"
    staged = site / source.parent.name / source.name
    marker = site / ".complete"
    if marker.exists():
        return staged
    shutil.rmtree(site, ignore_errors=True)  # a copy cut short
    shutil.copytree(source, staged, symlinks=True)
    libs = source.parent.parent / f"{source.parent.name}.libs"
    if libs.is_dir():
        shutil.copytree(libs, site / libs.name, symlinks=True)
    # Readable (and where executable, runnable) by the server's user, whatever umask the
    # virtualenv was installed under; writable by root alone.
    for path in [site, *site.rglob("*")]:
        if path.is_symlink():
            continue
        if path.is_dir() or path.stat().st_mode & 0o100:
            path.chmod(0o755)
        else:
            path.chmod(0o644)
    marker.touch()
    return staged


def initdb(home: PostgresHome, password: str) -> None:
    if (home.data_dir / "PG_VERSION").exists():
        return
    # The password file is read by initdb, which runs as the server's user; gone right after.
    pwfile = home.base / "superuser-password"
    fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(password + "\n")
    if home.uid is not None and home.gid is not None:
        os.chown(pwfile, home.uid, home.gid)
    try:
        with open(home.log_path, "ab") as log:
            offset = log.seek(0, os.SEEK_END)
            result = subprocess.run(
                [str(home.bin_dir / "initdb"), "-D", str(home.data_dir), "-U", SUPERUSER,
                 f"--pwfile={pwfile}", "--auth-local=trust", "--auth-host=scram-sha-256",
                 "--encoding=UTF8", "--locale=C", "--no-sync"],
                stdout=log, stderr=subprocess.STDOUT, user=home.uid, group=home.gid,
                extra_groups=[] if home.uid is not None else None, check=False,
            )
    finally:
        pwfile.unlink(missing_ok=True)
    if result.returncode != 0:
        raise ComponentFailed(
            f"initdb failed (exit {result.returncode}):\n"
            + procs.tail(home.log_path, since=offset),
            hint="read the log; `boxbus dev down` removes a half-made data directory",
            log_path=home.log_path,
        )


def start(home: PostgresHome) -> procs.ProcessRecord:
    argv = [
        str(home.bin_dir / "postgres"), "-D", str(home.data_dir),
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


async def wait_for_previous(home: PostgresHome, *, timeout: float = 15.0) -> None:
    """Wait until no earlier server of this data directory is left. A postmaster killed a
    moment ago is a zombie until its parent reaps it, and its backends run on until they
    notice; PostgreSQL refuses to start while either exists ("lock file already exists",
    "shared memory block still in use")."""
    deadline = time.monotonic() + timeout
    while left := _previous_server(home.data_dir):
        _reap(left)
        if time.monotonic() > deadline:
            raise ComponentFailed(
                f"an earlier PostgreSQL of {home.data_dir} (pids {', '.join(map(str, left))}) "
                f"is still running after {timeout:.0f} s",
                hint="wait for it to end, or stop those processes, then `boxbus dev up` again",
                log_path=home.log_path,
            )
        await asyncio.sleep(0.1)


def _reap(pids: list[int]) -> None:
    """A postmaster this process started (the test suite's stacks) is our child: only we can
    reap its zombie (without waiting: WNOHANG)."""
    for pid in pids:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


def _previous_server(data_dir: Path) -> list[int]:
    """Pids of processes of a server on ``data_dir``: the postmaster named in its lock file
    while that pid lives (a zombie included), and every process working in the folder
    (PostgreSQL's processes run with the data directory as their working directory)."""
    found: set[int] = set()
    try:
        first = (data_dir / "postmaster.pid").read_text().split("\n", 1)[0].strip()
    except OSError:
        first = ""
    if first.isdigit() and Path(f"/proc/{first}").exists():
        found.add(int(first))
    target = str(data_dir)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.readlink(entry / "cwd") == target:
                found.add(int(entry.name))
        except OSError:
            continue  # gone, or another user's process
    return sorted(found)


async def wait_ready(port: int, record: procs.ProcessRecord, password: str, *,
                     timeout: float = 30.0) -> None:
    async def accepts() -> bool:
        try:
            conn = await asyncpg.connect(url(port, password=password), timeout=2)
        except (OSError, asyncpg.PostgresError, TimeoutError):
            return False
        await conn.close()
        return True

    await procs.wait_until(accepts, what="PostgreSQL", records=[record], timeout=timeout,
                           hint="read the log; a port in use is the usual cause")
