"""Apache Kafka in KRaft mode, one or three combined broker+controller nodes on 127.0.0.1.

Settings are tuned for a 2-core machine and fast tests: small heap, two network and I/O threads,
a 2 MiB cleaner buffer instead of 128 MiB, no initial rebalance delay. With three nodes the
cluster behaves like production in what the fault tests need: replication factor 3,
min.insync.replicas 2, and a broker fenced within about three seconds of dying.

Secure like a shared cluster, since boxes of different companies meet on it:

- the client listener (also between brokers) takes SASL/SCRAM-SHA-512 only; the controller
  listener takes SASL/PLAIN (SCRAM cannot be used between controllers, KAFKA-15513). An open
  controller port would be an admin port: it accepts ACL, credential and quota changes;
- the StandardAuthorizer refuses whatever no ACL allows (``allow.everyone.if.no.acl.found``
  false); the super users are the operator (``admin``) and the nodes themselves
  (``kafka-node``), nobody else;
- both SCRAM credentials are written into the metadata when the storage is formatted (KIP-900),
  so the cluster is never open, not even while it boots. The passwords are made here, kept in
  the run directory with mode 0600 (``credentials.json`` for the nodes, ``admin.json`` for
  clients), and Kafka itself stores only salted hashes.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import subprocess
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from bus.credentials import write_private
from bus.devstack import procs
from bus.errors import ComponentFailed
from bus.kafka import KafkaAccess

# The heap grows with the partitions and ACLs a broker holds: `boxbus bench scale` measured
# about 200 MB in use for a small network and 450-470 MB at 2,000 boxes (10,087 partitions,
# 20,036 ACLs); with a 512 MB limit, networks of that size made and removed twice in a row ran
# the broker out of memory. The JVM takes pages only as the heap grows.
HEAP = "-Xmx1g"
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


ADMIN = "admin"
NODE_PRINCIPAL = "kafka-node"
MECHANISM = "SCRAM-SHA-512"
PROTOCOL = "SASL_PLAINTEXT"


@dataclass(frozen=True)
class ClusterSecrets:
    """The passwords of the operator and of the nodes of one local cluster."""

    admin_password: str
    node_password: str

    @classmethod
    def new(cls) -> ClusterSecrets:
        return cls(secrets.token_urlsafe(24), secrets.token_urlsafe(24))

    @classmethod
    def load_or_new(cls, path: Path) -> ClusterSecrets:
        """The cluster's secrets, made once and kept (a restarted node must present the same
        ones): ``path`` is private to the user who runs the stack."""
        if path.exists():
            return cls(**json.loads(path.read_text()))
        made = cls.new()
        write_private(path, asdict(made))
        return made



def write_admin_credentials(path: Path, bootstrap: str, secrets_: ClusterSecrets) -> None:
    """What an operator's client needs, in the form of `boxbus box credentials --json`."""
    write_private(path, {"username": ADMIN, "password": secrets_.admin_password,
                         "bootstrap_servers": bootstrap, "security_protocol": PROTOCOL,
                         "sasl_mechanism": MECHANISM})


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


def _jaas(module: str, username: str, password: str, **users: str) -> str:
    extra = "".join(f' user_{name}="{secret}"' for name, secret in users.items())
    return f'{module} required username="{username}" password="{password}"{extra};'


def node_properties(node: KafkaNode, cluster: list[KafkaNode], keys: ClusterSecrets,
                    session_seconds: int = 0) -> str:
    size = len(cluster)
    replication = 3 if size >= 3 else 1
    min_isr = 2 if size >= 3 else 1
    voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in cluster)
    settings = {
        "process.roles": "broker,controller",
        "node.id": node.node_id,
        "controller.quorum.voters": voters,
        "listeners": f"CLIENT://127.0.0.1:{node.port},CONTROLLER://127.0.0.1:{node.controller_port}",
        "advertised.listeners": f"CLIENT://127.0.0.1:{node.port}",
        "listener.security.protocol.map": "CLIENT:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "CLIENT",
        "sasl.mechanism.inter.broker.protocol": MECHANISM,
        "sasl.mechanism.controller.protocol": "PLAIN",
        "listener.name.client.sasl.enabled.mechanisms": MECHANISM,
        "listener.name.client.scram-sha-512.sasl.jaas.config": _jaas(
            "org.apache.kafka.common.security.scram.ScramLoginModule",
            NODE_PRINCIPAL, keys.node_password),
        # A client session ends after this: one that cannot log in again (its password rotated,
        # its user removed) is cut off, not left working on an old login.
        "listener.name.client.scram-sha-512.connections.max.reauth.ms": session_seconds * 1000,
        "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
        "listener.name.controller.plain.sasl.jaas.config": _jaas(
            "org.apache.kafka.common.security.plain.PlainLoginModule",
            NODE_PRINCIPAL, keys.node_password, **{NODE_PRINCIPAL: keys.node_password}),
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "super.users": f"User:{ADMIN};User:{NODE_PRINCIPAL}",
        "allow.everyone.if.no.acl.found": "false",
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
        # A deleted topic's files go after a second, not a minute: benchmarks and tests delete
        # whole networks, and each partition holds a file descriptor until its files are gone
        # (ten thousand partitions deleted and made again within a minute ran the broker out
        # of descriptors: `boxbus bench scale`).
        "file.delete.delay.ms": 1000,
        "broker.heartbeat.interval.ms": 500,
        "broker.session.timeout.ms": 3000,
        "controller.quorum.election.timeout.ms": 1000,
        "controller.quorum.fetch.timeout.ms": 2000,
        "replica.lag.time.max.ms": 5000,
        "share.coordinator.state.topic.replication.factor": replication,
        "share.coordinator.state.topic.min.isr": min_isr,
    }
    return "".join(f"{key}={value}\n" for key, value in settings.items())


def write_config(node: KafkaNode, cluster: list[KafkaNode], keys: ClusterSecrets,
                 session_seconds: int = 0) -> None:
    node.home.mkdir(parents=True, exist_ok=True)
    # The file holds the nodes' password: readable by its owner only.
    fd = os.open(node.config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(node_properties(node, cluster, keys, session_seconds))
    (node.home / "log4j2.yaml").write_text(_LOG4J2)


def _classpath(lib_dir: Path) -> str:
    return f"{lib_dir}/*"


def format_storage(java: Path, lib_dir: Path, node: KafkaNode, cluster_id: str,
                   keys: ClusterSecrets) -> None:
    """Run Kafka's StorageTool, with the operator's and the nodes' SCRAM credentials in the
    first metadata (KIP-900); a node already formatted (a restart) is left as it is."""
    if (node.data_dir / "meta.properties").exists():
        return
    scram = [f"{MECHANISM}=[name={name},password={password}]" for name, password in
             ((ADMIN, keys.admin_password), (NODE_PRINCIPAL, keys.node_password))]
    # The passwords go through a Java argument file readable by its owner only, never on the
    # command line (which any local user may read in /proc while the tool runs).
    tool_args = ["kafka.tools.StorageTool", "format", "-t", cluster_id,
                 "-c", str(node.config_path),
                 *(arg for credential in scram for arg in ("--add-scram", credential))]
    arg_file = node.home / "format.args"
    fd = os.open(arg_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write("".join(f'"{arg}"\n' for arg in tool_args))
    try:
        result = subprocess.run(
            [str(java), "-Xmx128m", "-XX:TieredStopAtLevel=1",
             f"-Dlog4j2.configurationFile={node.home / 'log4j2.yaml'}",
             "-cp", _classpath(lib_dir), f"@{arg_file}"],
            capture_output=True, text=True, check=False,
        )
    finally:
        arg_file.unlink(missing_ok=True)
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


def admin_access(nodes: list[KafkaNode], keys: ClusterSecrets) -> KafkaAccess:
    """The operator's connection to these nodes."""
    return KafkaAccess(",".join(n.address for n in nodes)).as_principal(
        ADMIN, keys.admin_password)


async def wait_ready(
    nodes: list[KafkaNode], records: list[procs.ProcessRecord], keys: ClusterSecrets, *,
    timeout: float = 90.0,
) -> None:
    """Ready means each of ``nodes`` accepts connections on its own port, a real client's
    metadata lists them all (logged in as the operator), and the group coordinator (hence
    ``__consumer_offsets``) exists."""
    names = ", ".join(str(n.node_id) for n in nodes)
    await procs.wait_until(
        lambda: _nodes_answer(nodes, keys),
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
    keys = ClusterSecrets.new()
    write_config(node, [node], keys)
    format_storage(java, lib_dir, node, new_cluster_id(), keys)
    flags = [f"-XX:ArchiveClassesAtExit={partial}", "-Xlog:cds=off", "-Xlog:cds+dynamic=off"]
    record = start_node(java, lib_dir, node, cds=flags)
    try:
        await wait_ready([node], [record], keys, timeout=120)
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


async def _nodes_answer(nodes: list[KafkaNode], keys: ClusterSecrets) -> bool:
    # A closed port is found with a plain TCP connect: aiokafka would log an error per attempt.
    for node in nodes:
        if not await _port_accepts(node.address):
            return False
    admin = admin_access(nodes, keys).admin(request_timeout_ms=3000)
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
