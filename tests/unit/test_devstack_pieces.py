"""Pure pieces of the local stack: broker configuration, process identity, Java discovery."""

from __future__ import annotations

import signal
import socket
import sys
import time
from pathlib import Path

import pytest

from bus import PrerequisiteError
from bus.devstack import jvm, kafka, procs
from bus.devstack.stack import DEFAULT_DEPLOY_DIR


def _props(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line)


def _nodes(count: int, home: Path) -> list[kafka.KafkaNode]:
    return [kafka.KafkaNode(i, 9000 + 2 * i, 9001 + 2 * i, home / str(i))
            for i in range(1, count + 1)]


def test_single_node_config_is_small_and_fast(tmp_path: Path) -> None:
    (node,) = _nodes(1, tmp_path)
    props = _props(kafka.node_properties(node, [node]))
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:9003"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:9002,CONTROLLER://127.0.0.1:9003"
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert props["log.cleaner.dedupe.buffer.size"] == str(2 * 1024 * 1024)
    assert props["num.io.threads"] == "2"


def test_three_node_config_replicates_and_fences_fast(tmp_path: Path) -> None:
    nodes = _nodes(3, tmp_path)
    for node in nodes:
        props = _props(kafka.node_properties(node, nodes))
        assert props["node.id"] == str(node.node_id)
        assert props["controller.quorum.voters"] == (
            "1@127.0.0.1:9003,2@127.0.0.1:9005,3@127.0.0.1:9007")
        assert props["default.replication.factor"] == "3"
        assert props["offsets.topic.replication.factor"] == "3"
        assert props["min.insync.replicas"] == "2"
        assert int(props["broker.session.timeout.ms"]) <= 3000


def test_cluster_ids_never_look_like_an_option() -> None:
    ids = {kafka.new_cluster_id() for _ in range(2000)}
    assert len(ids) == 2000
    assert all(len(i) == 22 and not i.startswith("-") for i in ids)


def test_a_process_is_recognised_by_pid_and_start_time(tmp_path: Path) -> None:
    record = procs.spawn("sleeper", ["sleep", "30"], log_path=tmp_path / "s.log")
    try:
        assert procs.is_alive(record)
        # Same pid, other start time: a pid reused by another program is never signalled.
        impostor = record.model_copy(update={"start_ticks": record.start_ticks + 1})
        assert not procs.is_alive(impostor)
        assert not procs.signal_process(impostor, signal.SIGTERM)
        assert procs.is_alive(record)
    finally:
        procs.stop(record, timeout=5)
    assert not procs.is_alive(record)


def test_stop_escalates_to_sigkill(tmp_path: Path) -> None:
    stubborn = [sys.executable, "-c",
                "import signal,time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                "print('ready', flush=True); time.sleep(60)"]
    record = procs.spawn("stubborn", stubborn, log_path=tmp_path / "s.log")
    deadline = time.monotonic() + 10
    while "ready" not in (tmp_path / "s.log").read_text() and time.monotonic() < deadline:
        time.sleep(0.02)
    began = time.monotonic()
    procs.stop(record, timeout=0.5)
    assert not procs.is_alive(record)
    assert time.monotonic() - began < 5


def test_port_checks() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        assert not procs.port_is_free(sock.getsockname()[1])
    ports = procs.free_ports(5)
    assert len(set(ports)) == 5 and all(procs.port_is_free(p) for p in ports)


def test_java_discovery_reports_what_it_found(monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(PrerequisiteError, match=r"there is no `java` on PATH or in JAVA_HOME\n"):
        jvm.find_java(17, purpose="Apache Kafka", search_system=False)
    with pytest.raises(PrerequisiteError) as failure:
        jvm.find_java(99, purpose="a future registry")
    assert "a future registry needs Java 99 or newer, and " in str(failure.value)
    assert "BOXBUS_KAFKA_BOOTSTRAP_SERVERS" in str(failure.value)


def test_missing_maven_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    artifacts = jvm.kafka_artifacts(DEFAULT_DEPLOY_DIR)
    with pytest.raises(PrerequisiteError, match=r"Maven \(mvn\) is not on PATH"):
        jvm.check_fetchable(artifacts, tmp_path / "cache")
    with pytest.raises(PrerequisiteError, match=r"Maven \(mvn\) is not on PATH"):
        jvm.ensure_artifacts(artifacts, tmp_path / "cache")
    # Cached artifacts need no Maven.
    marker = artifacts.target(tmp_path / "cache") / ".complete"
    marker.parent.mkdir(parents=True)
    marker.write_text("x")
    jvm.check_fetchable(artifacts, tmp_path / "cache")


def test_a_failed_maven_fetch_names_its_log(monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Path) -> None:
    fake = tmp_path / "bin" / "mvn"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'Could not resolve artifact' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(fake.parent))
    artifacts = jvm.kafka_artifacts(DEFAULT_DEPLOY_DIR)
    with pytest.raises(PrerequisiteError, match="Maven could not fetch") as failure:
        jvm.ensure_artifacts(artifacts, tmp_path / "cache")
    assert failure.value.log_path is not None
    assert "Could not resolve artifact" in failure.value.log_path.read_text()
    assert not artifacts.target(tmp_path / "cache").exists()  # nothing half-made is kept


def test_artifact_versions_come_from_the_poms(tmp_path: Path) -> None:
    kafka_set = jvm.kafka_artifacts(DEFAULT_DEPLOY_DIR)
    assert kafka_set.version().startswith("4.")
    assert kafka_set.target(tmp_path) == tmp_path / "jvm" / f"kafka-{kafka_set.version()}"
    assert jvm.registry_artifacts(DEFAULT_DEPLOY_DIR).version().startswith("3.")
