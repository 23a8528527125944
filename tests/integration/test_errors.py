"""Error paths of `boxbus dev up`: each gives one clear message, names the log where there is
one, says what to do, and leaves nothing running."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

from bus import ComponentFailed, Settings
from bus.devstack import Component, LocalStack
from bus.devstack.state import StackState
from tests.conftest import boxbus_cli


def _env(run_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOXBUS_")}
    env.pop("JAVA_HOME", None)
    return {**env, "BOXBUS_RUN_DIR": str(run_dir), **extra}


def test_up_without_java_on_path_says_what_to_install(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = subprocess.run(
        [*boxbus_cli(), "dev", "up", "--only", "kafka"],
        env=_env(run_dir, PATH=str(tmp_path / "empty-bin")),
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "Apache Kafka needs Java 17 or newer" in result.stderr
    assert "there is no `java` on PATH or in JAVA_HOME" in result.stderr
    assert "JAVA_HOME" in result.stderr and "BOXBUS_KAFKA_BOOTSTRAP_SERVERS" in result.stderr
    assert "Traceback" not in result.stderr
    state = StackState.load(run_dir)
    assert state is None or state.processes == {}


def test_up_with_a_port_in_use_names_the_port_and_the_way_out(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [*boxbus_cli(), "dev", "up", "--only", "smtp"],
            # With base port P-8, the SMTP server's port is P.
            env=_env(tmp_path / "run", BOXBUS_DEV_BASE_PORT=str(port - 8)),
            capture_output=True, text=True, timeout=60, check=False,
        )
    assert result.returncode == 2, result.stderr
    assert f"port {port} on 127.0.0.1, wanted for smtp, is in use" in result.stderr
    assert "BOXBUS_DEV_BASE_PORT" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.embedded
async def test_a_crashing_broker_is_reported_with_its_log(tmp_path: Path) -> None:
    settings = Settings(run_dir=tmp_path / "run")
    stack = LocalStack(settings, components=frozenset({Component.KAFKA}), base_port=0)
    first = await stack.up()
    try:
        stack.kill_node(1)
        # A data directory of another node: the broker refuses it and exits.
        meta = settings.run_dir / "kafka" / "node-1" / "data" / "meta.properties"
        text = meta.read_text()
        meta.write_text("\n".join(
            "node.id=7" if line.startswith("node.id=") else line for line in text.splitlines()
        ))
        with pytest.raises(ComponentFailed) as failure:
            await stack.up()
        message = str(failure.value)
        assert "Kafka node(s) 1 (process kafka-1" in message
        assert "exited while starting" in message
        assert failure.value.log_path == settings.run_dir / "kafka" / "node-1" / "kafka.log"
        assert "log: " in message and failure.value.log_path.exists()
        assert failure.value.retriable
        status = stack.status()
        assert status is not None and status.components["kafka"] == "stopped"
    finally:
        stack.down()
    assert not settings.run_dir.exists()
    assert not Path(f"/proc/{first.processes['kafka-1']}").exists()


def test_down_leaves_a_directory_without_run_state_alone(tmp_path: Path) -> None:
    precious = tmp_path / "not-a-stack" / "notes.txt"
    precious.parent.mkdir()
    precious.write_text("keep me")
    result = subprocess.run(
        [*boxbus_cli(), "dev", "down", "--json"], env=_env(precious.parent),
        capture_output=True, text=True, timeout=60, check=True,
    )
    assert '"stopped": []' in result.stdout
    assert precious.read_text() == "keep me"


def test_damaged_run_state_is_a_clear_error(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "state.json").write_text("{not json")
    result = subprocess.run(
        [*boxbus_cli(), "dev", "status"], env=_env(run_dir),
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 2
    assert "cannot be read" in result.stderr and "pids are in the file" in result.stderr
    assert "Traceback" not in result.stderr
