"""The registry can keep its schemas in the stack's PostgreSQL: a schema registered before the
registry process is killed is still there after `up` starts it again."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from bus import Settings
from bus.devstack import Component, LocalStack, RegistryStorage, procs
from bus.devstack.state import StackState

pytestmark = [pytest.mark.stack, pytest.mark.embedded]


async def test_postgres_storage_survives_a_registry_restart(tmp_path: Path) -> None:
    settings = Settings(run_dir=tmp_path / "run")
    stack = LocalStack(settings, components=frozenset({Component.POSTGRES, Component.REGISTRY}),
                       registry_storage=RegistryStorage.POSTGRES, base_port=0)
    schema = {"type": "record", "name": "Kept", "namespace": "it",
              "fields": [{"name": "id", "type": "string"}]}
    records: list[procs.ProcessRecord] = []
    postgres_dir: Path | None = None
    try:
        info = await stack.up()
        async with httpx.AsyncClient(base_url=str(info.schema_registry_url)) as client:
            reg = await client.post("/subjects/it.kept-value/versions",
                                    json={"schema": json.dumps(schema)})
            assert reg.status_code == 200, reg.text
            schema_id = reg.json()["id"]

        state = StackState.load(settings.run_dir)
        assert state is not None
        first = state.processes["registry"]
        procs.kill(first)
        assert (await stack.up()).components["registry"] == "running"
        state = StackState.load(settings.run_dir)
        assert state is not None and state.processes["registry"].pid != first.pid

        async with httpx.AsyncClient(base_url=str(info.schema_registry_url)) as client:
            assert (await client.get("/subjects")).json() == ["it.kept-value"]
            again = await client.get(f"/schemas/ids/{schema_id}")
            assert json.loads(again.json()["schema"])["name"] == "Kept"
        records = list(state.processes.values())
        postgres_dir = state.postgres_dir
    finally:
        stopped = stack.down()
    # `down` leaves nothing behind: no process it started, no run directory, no database files.
    assert sorted(stopped) == ["postgres", "registry"]
    assert records and not any(procs.is_alive(r) for r in records)
    assert not settings.run_dir.exists()
    assert postgres_dir is not None and not postgres_dir.exists()
