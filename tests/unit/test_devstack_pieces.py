"""Pure pieces of the local stack: broker configuration, process identity, Java discovery,
where PostgreSQL runs from."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
from pathlib import Path

import pytest

from bus import ComponentFailed, PrerequisiteError
from bus.devstack import jvm, kafka, postgres, procs
from bus.devstack.stack import DEFAULT_DEPLOY_DIR

KEYS = kafka.ClusterSecrets("admin-pw", "node-pw")


def _props(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line)


def _nodes(count: int, home: Path) -> list[kafka.KafkaNode]:
    return [kafka.KafkaNode(i, 9000 + 2 * i, 9001 + 2 * i, home / str(i))
            for i in range(1, count + 1)]


def test_single_node_config_is_small_and_fast(tmp_path: Path) -> None:
    (node,) = _nodes(1, tmp_path)
    props = _props(kafka.node_properties(node, [node], KEYS))
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:9003"
    assert props["listeners"] == "CLIENT://127.0.0.1:9002,CONTROLLER://127.0.0.1:9003"
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert props["log.cleaner.dedupe.buffer.size"] == str(2 * 1024 * 1024)
    assert props["num.io.threads"] == "2"


def test_every_listener_authenticates_and_only_admin_and_nodes_are_super_users(
    tmp_path: Path,
) -> None:
    (node,) = _nodes(1, tmp_path)
    props = _props(kafka.node_properties(node, [node], KEYS))
    assert props["listener.security.protocol.map"] == (
        "CLIENT:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT")
    assert "PLAINTEXT://" not in props["listeners"].replace("SASL_PLAINTEXT", "")
    assert props["listener.name.client.sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert props["listener.name.controller.sasl.enabled.mechanisms"] == "PLAIN"
    assert props["authorizer.class.name"].endswith("StandardAuthorizer")
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert props["super.users"] == "User:admin;User:kafka-node"
    # The nodes log in as themselves; the operator's password is not in the node's file.
    assert 'username="kafka-node"' in props["listener.name.client.scram-sha-512.sasl.jaas.config"]
    assert "admin-pw" not in kafka.node_properties(node, [node], KEYS)


def test_secrets_are_made_once_and_kept_private(tmp_path: Path) -> None:
    path = tmp_path / "run" / "kafka" / "credentials.json"
    made = kafka.ClusterSecrets.load_or_new(path)
    assert kafka.ClusterSecrets.load_or_new(path) == made  # a restart presents the same
    assert made.admin_password != made.node_password and len(made.admin_password) >= 32
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    admin = tmp_path / "admin.json"
    kafka.write_admin_credentials(admin, "127.0.0.1:9092", made)
    assert admin.stat().st_mode & 0o777 == 0o600
    assert set(json.loads(admin.read_text())) == {
        "username", "password", "bootstrap_servers", "security_protocol", "sasl_mechanism"}


def test_three_node_config_replicates_and_fences_fast(tmp_path: Path) -> None:
    nodes = _nodes(3, tmp_path)
    for node in nodes:
        props = _props(kafka.node_properties(node, nodes, KEYS))
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


async def test_a_failed_start_shows_the_log_of_that_start_only(tmp_path: Path) -> None:
    log_path = tmp_path / "server.log"
    log_path.write_text("initdb said this long ago\nSuccess.\n")
    record = procs.spawn("server", ["sh", "-c", "echo 'FATAL: this start failed'; exit 3"],
                         log_path=log_path)

    async def never() -> bool:
        return False

    with pytest.raises(ComponentFailed) as failed:
        await procs.wait_until(never, what="the server", records=[record], timeout=10,
                               hint="read the log")
    assert "FATAL: this start failed" in failed.value.message
    assert "long ago" not in failed.value.message and "Success" not in failed.value.message
    assert procs.tail(log_path).endswith("FATAL: this start failed")


def _fake_install(root: Path, mode: int) -> Path:
    """The wheel's layout: pginstall/{bin,lib,share} beside pgserver.libs."""
    install = root / "pgserver" / "pginstall"
    for folder in ("bin", "lib", "share"):
        (install / folder).mkdir(parents=True)
    (install / "bin" / "postgres").write_text("#!/bin/sh\n")
    (install / "bin" / "postgres").chmod(0o700)
    (install / "share" / "postgres.bki").write_text("data")
    (install / "share" / "postgres.bki").chmod(0o600)
    (root / "pgserver.libs").mkdir()
    (root / "pgserver.libs" / "libpq-1.so.5").write_text("lib")
    for path in [install, *install.rglob("*"), root / "pgserver.libs"]:
        if path.is_dir():
            path.chmod(mode)
    return install


def test_an_installation_out_of_reach_is_staged_beside_the_data(tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    install = _fake_install(private, 0o700)
    assert not postgres._traversable_by_others(install)
    base = tmp_path / "base"
    base.mkdir()

    staged = postgres._stage(install, base)
    # The relative layout is kept (the binaries' rpath reaches ../../../pgserver.libs).
    assert staged == base / "site" / "pgserver" / "pginstall"
    assert (staged / "bin" / "postgres").stat().st_mode & 0o777 == 0o755
    assert (staged / "share" / "postgres.bki").stat().st_mode & 0o777 == 0o644
    assert (staged.parents[1] / "pgserver.libs" / "libpq-1.so.5").read_text() == "lib"
    assert all(p.stat().st_mode & 0o777 == 0o755 for p in staged.rglob("*") if p.is_dir())
    # A restart reuses the copy; a copy cut short (no marker) is made again.
    (staged / "bin" / "postgres").write_text("kept")
    assert postgres._stage(install, base) == staged
    assert (staged / "bin" / "postgres").read_text() == "kept"
    (base / "site" / ".complete").unlink()
    postgres._stage(install, base)
    assert (staged / "bin" / "postgres").read_text() == "#!/bin/sh\n"


def test_a_given_installation_must_hold_postgres(tmp_path: Path) -> None:
    with pytest.raises(PrerequisiteError, match="no bin/postgres"):
        postgres.install_dir(tmp_path)
    assert postgres.install_dir(None).name == "pginstall"


def test_processes_of_an_earlier_server_are_found_by_their_folder(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    assert postgres._previous_server(data) == []
    record = procs.spawn("backend", ["sleep", "30"], log_path=tmp_path / "b.log", cwd=data)
    try:
        assert postgres._previous_server(data) == [record.pid]
    finally:
        procs.stop(record, timeout=5)
    assert postgres._previous_server(data) == []
    # The lock file's postmaster counts while its pid lives (a zombie too).
    (data / "postmaster.pid").write_text(f"{os.getpid()}\n{data}\n")
    assert postgres._previous_server(data) == [os.getpid()]
