"""Apache Kafka in KRaft mode, one or three combined broker+controller nodes on 127.0.0.1.

Settings are tuned for a 2-core machine and fast tests: small heap, two network and I/O threads,
a 2 MiB cleaner buffer instead of 128 MiB, no initial rebalance delay. With three nodes the
cluster behaves like production in what the fault tests need: replication factor 3,
min.insync.replicas 2, and a broker fenced within about three seconds of dying.
"""

from __future__ import annotations

import asyncio
import base64
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from bus.devstack import procs
from bus.errors import ComponentFailed
from bus.kafka import KafkaAccess

HEAP = "-Xmx512m"
JVM_FLAGS = [
    "-Xms128m", HEAP, "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
    "-XX:+ExplicitGCInvokesConcurrent", "-Djava.awt.headless=true",
    "-XX:+UseStringDeduplication",
]

_LOG4J2 = """\
Configuration:
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: WARN
      AppenderRef:
        - ref: STDOUT
    Logger:
      - name: kafka.server.KafkaRaftServer
        level: INFO
      - name: kafka.Kafka
        level: INFO
"""


@dataclass(frozen=True)
class KafkaNode:
    node_id: int
    port: int
    controller_port: int
    home: Path  # config, data and log of this node

    @property
    def config_path(self) -> Path:
        return self.home / "server.properties"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def log_path(self) -> Path:
        return self.home / "kafka.log"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


def node_properties(node: KafkaNode, cluster: list[KafkaNode]) -> str:
    size = len(cluster)
    replication = 3 if size >= 3 else 1
    min_isr = 2 if size >= 3 else 1
    voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in cluster)
    settings = {
        "process.roles": "broker,controller",
        "node.id": node.node_id,
        "controller.quorum.voters": voters,
        "listeners": f"PLAINTEXT://127.0.0.1:{node.port},CONTROLLER://127.0.0.1:{node.controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{node.port}",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": node.data_dir,
        # Topics are declared (topology apply, processors' admin calls), never made by a typo.
        "auto.create.topics.enable": "false",
        "group.initial.rebalance.delay.ms": 0,
        "offsets.topic.replication.factor": replication,
        "offsets.topic.num.partitions": 3,
        "transaction.state.log.replication.factor": replication,
        "transaction.state.log.min.isr": min_isr,
        "transaction.state.log.num.partitions": 3,
        "num.partitions": 1,
        "default.replication.factor": replication,
        "min.insync.replicas": min_isr,
        "log.cleaner.dedupe.buffer.size": 2 * 1024 * 1024,
        "log.cleaner.threads": 1,
        "num.network.threads": 2,
        "num.io.threads": 2,
        "num.recovery.threads.per.data.dir": 1,
        "background.threads": 2,
        "log.segment.bytes": 64 * 1024 * 1024,
        "broker.heartbeat.interval.ms": 500,
        "broker.session.timeout.ms": 3000,
        "controller.quorum.election.timeout.ms": 1000,
        "controller.quorum.fetch.timeout.ms": 2000,
        "replica.lag.time.max.ms": 5000,
        "share.coordinator.state.topic.replication.factor": replication,
        "share.coordinator.state.topic.min.isr": min_isr,
    }
    return "".join(f"{key}={value}\n" for key, value in settings.items())


def write_config(node: KafkaNode, cluster: list[KafkaNode]) -> None:
    node.home.mkdir(parents=True, exist_ok=True)
    node.config_path.write_text(node_properties(node, cluster))
    (node.home / "log4j2.yaml").write_text(_LOG4J2)


def _classpath(lib_dir: Path) -> str:
    return f"{lib_dir}/*"


def format_storage(java: Path, lib_dir: Path, node: KafkaNode, cluster_id: str) -> None:
    """Run Kafka's StorageTool; a node already formatted (a restart) is left as it is."""
    if (node.data_dir / "meta.properties").exists():
        return
    result = subprocess.run(
        [str(java), "-Xmx128m", "-XX:TieredStopAtLevel=1",
         f"-Dlog4j2.configurationFile={node.home / 'log4j2.yaml'}",
         "-cp", _classpath(lib_dir), "kafka.tools.StorageTool", "format",
         "-t", cluster_id, "-c", str(node.config_path)],
        capture_output=True, text=True, check=False,
    )
    if result.returncode != 0:
        node.log_path.write_text(result.stdout + result.stderr)
        raise ComponentFailed(
            f"formatting the storage of Kafka node {node.node_id} failed "
            f"(exit {result.returncode})",
            hint="read the log; remove the run directory (boxbus dev down) and try again",
            log_path=node.log_path,
        )


def new_cluster_id() -> str:
    """The same form as `kafka-storage random-uuid`: URL-safe base64 of 16 random bytes, never
    starting with '-' (Kafka's rule too: the tool's argument parser would take it for an
    option, and formatting fails one time in 64)."""
    while True:
        candidate = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not candidate.startswith("-"):
            return candidate


def start_node(
    java: Path, lib_dir: Path, node: KafkaNode, *, cds: list[str] | None = None
) -> procs.ProcessRecord:
    argv = [
        str(java), *JVM_FLAGS, *(cds or []),
        f"-Dlog4j2.configurationFile={node.home / 'log4j2.yaml'}",
        f"-Dkafka.logs.dir={node.home}",
        "-cp", _classpath(lib_dir), "kafka.Kafka", str(node.config_path),
    ]
    return procs.spawn(f"kafka-{node.node_id}", argv, log_path=node.log_path)


async def wait_ready(
    nodes: list[KafkaNode], records: list[procs.ProcessRecord], *, timeout: float = 90.0
) -> None:
    """Ready means each of ``nodes`` accepts connections on its own port, a real client's
    metadata lists them all, and the group coordinator (hence ``__consumer_offsets``) exists."""
    names = ", ".join(str(n.node_id) for n in nodes)
    await procs.wait_until(
        lambda: _nodes_answer(nodes),
        what=f"Kafka node(s) {names}", records=records, timeout=timeout,
        hint="read the log; a port in use or a damaged data directory are the usual causes "
        "(`boxbus dev down` removes the run directory)",
    )


def cds_archive(cache_dir: Path, lib_dir: Path, java_major: int) -> Path:
    """Where the class-data-sharing archive of this Kafka build on this Java lives."""
    return cache_dir / "cds" / f"{lib_dir.parent.name}-java{java_major}.jsa"


def cds_flags(archive: Path) -> list[str]:
    # -Xshare:auto (the default) falls back to no sharing if the archive does not fit.
    return [f"-XX:SharedArchiveFile={archive}", "-Xlog:cds=off", "-Xlog:cds+dynamic=off"]\
        if archive.exists() else []


async def train_cds_archive(java: Path, lib_dir: Path, archive: Path, work_dir: Path) -> bool:
    """Boot a throw-away node with -XX:ArchiveClassesAtExit, wait until it serves clients, stop
    it, and keep the archive only if the JVM wrote it and exited after a clean shutdown.

    The archive holds the classes a broker loads while booting, already parsed and verified;
    later boots map it instead of loading ~4,000 classes from jars (about a second less)."""
    if archive.exists():
        return True
    archive.parent.mkdir(parents=True, exist_ok=True)
    partial = archive.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    port, controller_port = procs.free_ports(2)
    node = KafkaNode(1, port, controller_port, work_dir / "cds-training")
    write_config(node, [node])
    format_storage(java, lib_dir, node, new_cluster_id())
    flags = [f"-XX:ArchiveClassesAtExit={partial}", "-Xlog:cds=off", "-Xlog:cds+dynamic=off"]
    record = start_node(java, lib_dir, node, cds=flags)
    try:
        await wait_ready([node], [record], timeout=120)
    finally:
        procs.stop(record, timeout=60)
    if partial.exists() and partial.stat().st_size > 1024 * 1024:
        partial.rename(archive)
        return True
    partial.unlink(missing_ok=True)
    return False


async def _port_accepts(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), timeout=1)
    except (TimeoutError, OSError):
        return False
    writer.close()
    return True


async def _nodes_answer(nodes: list[KafkaNode]) -> bool:
    # A closed port is found with a plain TCP connect: aiokafka would log an error per attempt.
    for node in nodes:
        if not await _port_accepts(node.address):
            return False
    admin = KafkaAccess(",".join(n.address for n in nodes)).admin(request_timeout_ms=3000)
    try:
        await admin.start()
        cluster = await admin.describe_cluster()
        listed = {broker["node_id"] for broker in cluster["brokers"]}
        if not {n.node_id for n in nodes} <= listed or cluster["controller_id"] in (None, -1):
            return False
        # FindCoordinator makes the broker create __consumer_offsets now, with all replicas up.
        await admin.find_coordinator("boxbus-dev-readiness")
        return True
    except Exception:
        return False
    finally:
        await admin.close()
