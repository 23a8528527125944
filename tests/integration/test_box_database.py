"""One rule finds a box's database for every command: --database-url, else
BOXBUS_DATABASE_URL, else `<namespace>_<box>` on the local stack."""

from __future__ import annotations

import json
import subprocess
import uuid

import asyncpg
import pytest

from bus import create_database
from bus.db import drop_database, owner_url
from bus.devstack import StackInfo
from bus.errors import ConfigError
from tests.conftest import boxbus_cli

pytestmark = pytest.mark.stack


def _boxbus(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*boxbus_cli(), *args], env={**env, "COLUMNS": "300"},
                          capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.embedded
async def test_every_box_command_finds_the_same_database(
    stack: StackInfo, env_for_cli: dict[str, str]
) -> None:
    assert stack.database_url
    ns = f"db{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in env_for_cli.items() if k != "BOXBUS_DATABASE_URL"}

    made = _boxbus(env, "box", "migrate", "--box", "shop-1", "--namespace", ns, "--json")
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["database"].endswith(f"/{ns}_shop_1")
    assert json.loads(made.stdout)["applied"] == [1, 2, 3, 4, 5, 6]
    conn = await asyncpg.connect(stack.database_url.rsplit("/", 1)[0] + f"/{ns}_shop_1")
    try:
        await conn.execute(
            "INSERT INTO boxbus_outbox (event_id, event_type, topic, record_key, record_value, "
            "headers) VALUES ('e1', 't', 'x', 'k', 'v', '[]')")
    finally:
        await conn.close()

    # The box's database is its own role's, which is no superuser and reaches no other box's.
    own = owner_url(stack.database_url, f"{ns}_shop_1")
    conn = await asyncpg.connect(own)
    try:
        assert await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
                                   ) is False
        assert await conn.fetchval("SELECT count(*) FROM boxbus_outbox") == 1
    finally:
        await conn.close()
    other = await create_database(stack.database_url, f"{ns}_other_box")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await asyncpg.connect(own.rsplit("/", 1)[0] + f"/{ns}_other_box")
    assert other != own

    # The namespace as a flag or as the setting, the same database either way.
    for args, extra in [(("--namespace", ns), {}), ((), {"BOXBUS_TOPIC_NAMESPACE": ns})]:
        status = _boxbus({**env, **extra}, "relay", "status", "--box", "shop-1", *args, "--json")
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["backlog_rows"] == 1
    again = _boxbus(env, "box", "migrate", "--box", "shop-1", "--namespace", ns)
    assert "already up to date" in again.stdout

    # BOXBUS_DATABASE_URL names the box's database itself.
    url = stack.database_url.rsplit("/", 1)[0] + f"/{ns}_shop_1"
    given = _boxbus({**env, "BOXBUS_DATABASE_URL": url}, "relay", "status", "--box", "shop-1",
                    "--json")
    assert json.loads(given.stdout)["backlog_rows"] == 1

    # An SDK box is not a reference box; a database without the SDK's tables is refused.
    shown = _boxbus(env, "box", "show", "--box", "shop-1", "--namespace", ns)
    assert shown.returncode == 2 and "not a reference box's database" in shown.stderr
    await create_database(stack.database_url, f"{ns}_bare")
    bare = _boxbus(env, "relay", "status", "--box", "bare", "--namespace", ns)
    assert bare.returncode == 2
    assert "lacks the SDK's migrations 1, 2, 3, 4" in bare.stderr
    assert "boxbus box migrate --box bare" in bare.stderr

    # A box without a database: the boxes of the namespace that have one are named.
    missing = _boxbus(env, "relay", "unpark", "--box", "nope", "--namespace", ns)
    assert missing.returncode == 2
    assert f"looked for {ns}_nope" in missing.stderr
    assert "with a database: bare, other_box, shop_1" in missing.stderr


async def test_drop_database_removes_a_box_database_and_its_role_only(stack: StackInfo) -> None:
    assert stack.database_url
    name = f"drop_{uuid.uuid4().hex[:8]}"
    dsn = await create_database(stack.database_url, name)
    held = await asyncpg.connect(dsn)  # a session still open: ended by the drop
    try:
        assert await drop_database(stack.database_url, name) is True
    finally:
        held.terminate()  # (its server side is gone already)
    server = await asyncpg.connect(stack.database_url)
    try:
        assert await server.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name) is None
        assert await server.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", name) is None
        # A role boxbus did not make is refused, and left in place.
        other = f"other_{uuid.uuid4().hex[:8]}"
        await server.execute(f'CREATE ROLE "{other}"')
        try:
            with pytest.raises(ConfigError, match="not a box database's owner made by boxbus"):
                await drop_database(stack.database_url, other)
            assert await server.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", other)
        finally:
            await server.execute(f'DROP ROLE "{other}"')
    finally:
        await server.close()
    assert await drop_database(stack.database_url, name) is False  # gone: nothing to do
