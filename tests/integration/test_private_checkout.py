"""The local stack from a checkout other users cannot enter (root's home, any `mktemp -d`):
PostgreSQL, which runs as an unprivileged user under root, still starts, and starts again right
after its postmaster was killed."""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import signal
from pathlib import Path

import asyncpg
import pytest

from bus import Settings
from bus.devstack import Component, LocalStack, postgres, procs
from bus.devstack.state import StackState

pytestmark = [pytest.mark.stack, pytest.mark.embedded]


def _private_copy_of_the_installation(private: Path) -> Path:
    """The wheel's PostgreSQL as a virtualenv in a private checkout holds it."""
    source = postgres.install_dir()
    site = private / "venv" / "site-packages"
    shutil.copytree(source, site / "pgserver" / "pginstall", symlinks=True)
    libs = source.parents[1] / "pgserver.libs"
    if libs.is_dir():
        shutil.copytree(libs, site / "pgserver.libs", symlinks=True)
    return site / "pgserver" / "pginstall"


async def _answers(url: str) -> int:
    conn = await asyncpg.connect(url, timeout=5)
    try:
        return int(await conn.fetchval("SELECT 42"))
    finally:
        await conn.close()


async def test_postgres_runs_from_a_private_checkout_and_restarts_after_a_kill(
    tmp_path: Path,
) -> None:
    private = tmp_path / "home"
    private.mkdir(mode=0o700)
    install = _private_copy_of_the_installation(private)
    settings = Settings(run_dir=private / "run", postgres_install_dir=install)
    local = LocalStack(settings, components=frozenset({Component.POSTGRES}), base_port=0)
    info = await local.up()
    try:
        assert info.database_url is not None
        assert await _answers(info.database_url) == 42
        state = StackState.load(settings.run_dir)
        assert state is not None and state.postgres_dir is not None
        record = state.processes["postgres"]
        if os.geteuid() == 0:
            # Run as the unprivileged user, from a copy it can reach; the checkout untouched.
            assert pwd.getpwuid(os.stat(f"/proc/{record.pid}").st_uid).pw_name == "boxbus"
            assert Path(record.argv[0]).is_relative_to(state.postgres_dir)
            assert private.stat().st_mode & 0o777 == 0o700

        # Killed like a crash, started again at once: the old postmaster and its backends
        # are still going for a moment; `up` waits for them instead of failing.
        os.kill(record.pid, signal.SIGKILL)
        while procs.is_alive(record):
            await asyncio.sleep(0.01)
        again = await local.up()
        assert again.database_url == info.database_url
        assert await _answers(info.database_url) == 42
    finally:
        local.down()
    assert not state.postgres_dir.exists()
