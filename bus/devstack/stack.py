"""The embedded local stack: Kafka (1 or 3 KRaft nodes), PostgreSQL, the schema registry and an
SMTP server, started in parallel as background processes on 127.0.0.1.

``up`` checks every prerequisite before it starts anything, then starts each component and
waits until a real client request to it succeeds. Every process it starts is written into the
run state at once, so ``down`` (from any shell) can stop exactly those, by pid, even after a
failed ``up``. A service given in the settings (an external Kafka, database or registry) is used
as it is and never started.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from pydantic import BaseModel

from bus.db import create_database
from bus.devstack import jvm, kafka, postgres, procs, registry, smtp
from bus.devstack.state import (
    ALL_COMPONENTS,
    Component,
    KafkaPorts,
    Ports,
    StackState,
    locked,
)
from bus.errors import PortInUseError, StackError
from bus.log import get_logger
from bus.settings import Settings

log = get_logger(__name__)

KAFKA_MIN_JAVA = 17
PORTS_USED = 10
DEFAULT_DEPLOY_DIR = Path(__file__).resolve().parents[2] / "deploy"


class NodeInfo(BaseModel):
    node_id: int
    address: str
    pid: int | None
    alive: bool


class SmtpInfo(BaseModel):
    host: str | None
    port: int | None
    maildir: Path | None


class StackInfo(BaseModel):
    """What `dev up --json` and `dev status --json` print: where each service answers."""

    kafka_bootstrap: str | None
    database_url: str | None
    schema_registry_url: str | None
    smtp: SmtpInfo
    nodes: list[NodeInfo]
    components: dict[str, str]
    boot_seconds: dict[str, float]
    run_dir: Path


class LocalStack:
    """Start, inspect and stop the local stack kept in ``settings.run_dir``."""

    def __init__(
        self,
        settings: Settings,
        *,
        nodes: int = 1,
        components: frozenset[Component] = ALL_COMPONENTS,
        registry_storage: registry.RegistryStorage = registry.RegistryStorage.MEMORY,
        base_port: int | None = None,
        deploy_dir: Path = DEFAULT_DEPLOY_DIR,
    ) -> None:
        if nodes not in (1, 3):
            raise StackError(f"--nodes must be 1 or 3, got {nodes}")
        if registry_storage is registry.RegistryStorage.POSTGRES and (
            Component.POSTGRES not in components and not settings.external_database
        ):
            raise StackError("registry storage 'postgres' needs the postgres component")
        self.settings = settings
        self.run_dir = settings.run_dir
        self.nodes = nodes
        self.components = components
        self.registry_storage = registry_storage
        self.base_port = settings.dev_base_port if base_port is None else base_port
        self.deploy_dir = deploy_dir

    # -- which components this stack starts itself ----------------------------------------------

    def _embedded(self) -> list[Component]:
        external = {
            Component.KAFKA: self.settings.external_kafka,
            Component.POSTGRES: self.settings.external_database,
            Component.REGISTRY: self.settings.external_registry,
            Component.SMTP: self.settings.external_smtp,
        }
        return [c for c in Component if c in self.components and not external[c]]

    def _ports(self) -> Ports:
        # The same layout for one node or three, so addresses don't move: B..B+2 Kafka
        # clients, B+3..B+5 controllers, then PostgreSQL, registry, SMTP, registry management.
        numbers = (
            procs.free_ports(PORTS_USED) if self.base_port == 0
            else list(range(self.base_port, self.base_port + PORTS_USED))
        )
        kafka_ports = [
            KafkaPorts(node_id=i + 1, port=numbers[i], controller_port=numbers[3 + i])
            for i in range(self.nodes)
        ]
        return Ports(kafka=kafka_ports, postgres=numbers[6], registry=numbers[7],
                     smtp=numbers[8], registry_management=numbers[9])

    def _check_ports(self, state: StackState, wanted: list[Component]) -> None:
        needed: list[tuple[str, int]] = []
        if Component.KAFKA in wanted:
            for k in state.ports.kafka:
                needed += [(f"kafka node {k.node_id}", k.port),
                           (f"kafka node {k.node_id} controller", k.controller_port)]
        if Component.POSTGRES in wanted:
            needed.append(("postgres", state.ports.postgres))
        if Component.REGISTRY in wanted:
            needed.append(("registry", state.ports.registry))
            needed.append(("registry management", state.ports.registry_management))
        if Component.SMTP in wanted:
            needed.append(("smtp", state.ports.smtp))
        for what, port in needed:
            if not procs.port_is_free(port):
                raise PortInUseError(
                    f"port {port} on 127.0.0.1, wanted for {what}, is in use by another process",
                    hint=f"stop that process (see `ss -ltnp 'sport = :{port}'`), or choose other "
                    f"ports with BOXBUS_DEV_BASE_PORT (now {self.base_port})",
                )

    # -- up -------------------------------------------------------------------------------------

    def fetch(self) -> dict[str, Path]:
        """Fetch the JVM artifacts into the cache and prepare the broker's class-data archive
        (what `make setup` does)."""
        cache = self.settings.cache_dir
        found = {
            "kafka": jvm.ensure_artifacts(jvm.kafka_artifacts(self.deploy_dir), cache),
            "registry": jvm.ensure_artifacts(jvm.registry_artifacts(self.deploy_dir), cache),
        }
        java = jvm.find_java_on_path(KAFKA_MIN_JAVA, purpose="Apache Kafka")
        lib = found["kafka"] / "lib"
        archive = kafka.cds_archive(cache, lib, java.major)
        with tempfile.TemporaryDirectory(prefix="boxbus-cds-") as work:
            if asyncio.run(kafka.train_cds_archive(java.java, lib, archive, Path(work))):
                found["kafka class-data archive"] = archive
        return found

    async def up(self) -> StackInfo:
        with locked(self.run_dir):
            state = StackState.load(self.run_dir)
            if state is not None and state.nodes != self.nodes:
                raise StackError(
                    f"a {state.nodes}-node stack is already set up in {self.run_dir}",
                    hint="run `boxbus dev down` first, or use another BOXBUS_RUN_DIR",
                )
            wanted = self._embedded()
            if state is None:
                state = StackState(
                    run_dir=self.run_dir, nodes=self.nodes, components=wanted,
                    registry_storage=self.registry_storage, ports=self._ports(),
                    cluster_id=kafka.new_cluster_id(),
                )
            else:
                wanted = sorted(set(wanted) | set(state.components))
                state.components = wanted
            missing = [c for c in wanted if not self._component_alive(state, c)]
            if missing:
                await self._start(state, missing)
            return self.info(state)

    async def _start(self, state: StackState, missing: list[Component]) -> None:
        # Everything that can fail without side effects fails here, before anything starts.
        kafka_java = (
            jvm.find_java_on_path(KAFKA_MIN_JAVA, purpose="Apache Kafka")
            if Component.KAFKA in missing else None
        )
        registry_java = (
            jvm.find_java(
                registry.MIN_JAVA, purpose="Apicurio Registry",
                preferred_home=self.settings.registry_java_home,
            )
            if Component.REGISTRY in missing else None
        )
        # Stale processes of a component (one Kafka node of three died) are stopped first.
        for component in missing:
            for name in self._process_names(state, component):
                record = state.processes.get(name)
                if record is not None:
                    procs.stop(record)
        self._check_ports(state, missing)
        state.save()

        started_at = time.monotonic()

        async def fetched(artifacts: jvm.ArtifactSet) -> Path:
            """The artifacts' folder; a first fetch is timed apart from the boot it precedes."""
            began = time.monotonic()
            folder = await asyncio.to_thread(
                jvm.ensure_artifacts, artifacts, self.settings.cache_dir
            )
            state.boot_seconds[f"fetch {artifacts.name}"] = round(time.monotonic() - began, 2)
            return folder

        async def start_kafka(java: jvm.JavaRuntime) -> float:
            folder = await fetched(jvm.kafka_artifacts(self.deploy_dir))
            began = time.monotonic()
            await self._start_kafka(state, java, folder)
            return time.monotonic() - began

        async def start_registry(java: Path) -> float:
            folder = await fetched(jvm.registry_artifacts(self.deploy_dir))
            began = time.monotonic()
            await self._start_registry(state, java, folder, postgres_ready)
            return time.monotonic() - began

        postgres_ready = asyncio.Event()
        steps: dict[str, Callable[[], Awaitable[float | None]]] = {}
        if kafka_java is not None:
            steps["kafka"] = lambda: start_kafka(kafka_java)
        if Component.POSTGRES in missing:
            steps["postgres"] = lambda: self._start_postgres(state, postgres_ready)
        else:
            postgres_ready.set()
        if registry_java is not None:
            steps["registry"] = lambda: start_registry(registry_java.java)
        if Component.SMTP in missing:
            steps["smtp"] = lambda: self._start_smtp(state)

        async def timed(name: str, step: Callable[[], Awaitable[float | None]]) -> None:
            began = time.monotonic()
            # A JVM step reports its boot time without the artifact fetch before it.
            seconds = await step()
            state.boot_seconds[name] = round(
                seconds if seconds is not None else time.monotonic() - began, 2
            )
            log.info("component ready", component=name, seconds=state.boot_seconds[name])

        results = await asyncio.gather(
            *(timed(name, step) for name, step in steps.items()), return_exceptions=True
        )
        state.boot_seconds["total"] = round(time.monotonic() - started_at, 2)
        state.save()
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            # Leave nothing half-running: stop what this call started, keep the logs.
            for component in missing:
                for name in self._process_names(state, component):
                    record = state.processes.pop(name, None)
                    if record is not None:
                        procs.stop(record, timeout=5)
            state.save()
            raise errors[0]

    def _kafka_nodes(self, state: StackState) -> list[kafka.KafkaNode]:
        return [
            kafka.KafkaNode(
                node_id=k.node_id, port=k.port, controller_port=k.controller_port,
                home=self.run_dir / "kafka" / f"node-{k.node_id}",
            )
            for k in state.ports.kafka
        ]

    async def _start_kafka(self, state: StackState, java: jvm.JavaRuntime, home: Path) -> None:
        lib = home / "lib"
        nodes = self._kafka_nodes(state)
        for node in nodes:
            kafka.write_config(node, nodes)
        await asyncio.gather(*(
            asyncio.to_thread(kafka.format_storage, java.java, lib, node, state.cluster_id)
            for node in nodes
        ))
        cds = kafka.cds_flags(kafka.cds_archive(self.settings.cache_dir, lib, java.major))
        records = []
        for node in nodes:
            record = kafka.start_node(java.java, lib, node, cds=cds)
            state.processes[record.name] = record
            records.append(record)
        state.save()
        await kafka.wait_ready(self._bootstrap(state), {n.node_id for n in nodes}, records)

    async def _start_postgres(self, state: StackState, ready: asyncio.Event) -> None:
        home = postgres.prepare(self.run_dir, state.ports.postgres)
        await asyncio.to_thread(postgres.initdb, home)
        record = postgres.start(home)
        state.processes[record.name] = record
        state.save()
        await postgres.wait_ready(home.url(), record)
        ready.set()

    async def _start_registry(
        self, state: StackState, java: Path, app_dir: Path, postgres_ready: asyncio.Event
    ) -> None:
        jdbc_url = None
        if state.registry_storage is registry.RegistryStorage.POSTGRES:
            await postgres_ready.wait()
            url = await create_database(self._database_url(state), "schema_registry")
            jdbc_url = "jdbc:" + url.replace(f"{postgres.SUPERUSER}@", "")
        java_version = jvm.java_major(java)
        cds = self.settings.cache_dir / "cds" / f"registry-{app_dir.name}-java{java_version}.jsa"
        cds.parent.mkdir(parents=True, exist_ok=True)
        record = registry.start(
            java, app_dir, state.ports.registry, state.ports.registry_management,
            self.run_dir / "registry" / "registry.log",
            storage=state.registry_storage, jdbc_url=jdbc_url, cds_archive=cds,
        )
        state.processes[record.name] = record
        state.save()
        await registry.wait_ready(registry.ccompat_url(state.ports.registry), record)

    async def _start_smtp(self, state: StackState) -> None:
        maildir = self.run_dir / "smtp" / "maildir"
        record = smtp.start(
            sys.executable, state.ports.smtp, maildir, self.run_dir / "smtp" / "smtp.log"
        )
        state.processes[record.name] = record
        state.save()
        await smtp.wait_ready(state.ports.smtp, record)

    # -- nodes (fault tests) ------------------------------------------------------------------

    def kill_node(self, node_id: int) -> None:
        """SIGKILL one Kafka node, as a crash would."""
        with locked(self.run_dir):
            state = self._require_state()
            record = state.processes.get(f"kafka-{node_id}")
            if record is None:
                raise StackError(f"there is no Kafka node {node_id} in {self.run_dir}")
            procs.kill(record)

    async def start_node(self, node_id: int) -> None:
        """Start one Kafka node again on its formatted data, and wait until it is back."""
        with locked(self.run_dir):
            state = self._require_state()
            nodes = {n.node_id: n for n in self._kafka_nodes(state)}
            if node_id not in nodes:
                raise StackError(f"there is no Kafka node {node_id} in {self.run_dir}")
            old = state.processes.get(f"kafka-{node_id}")
            if old is not None and procs.is_alive(old):
                return
            java = jvm.find_java_on_path(KAFKA_MIN_JAVA, purpose="Apache Kafka")
            lib = jvm.kafka_artifacts(self.deploy_dir).target(self.settings.cache_dir) / "lib"
            cds = kafka.cds_flags(kafka.cds_archive(self.settings.cache_dir, lib, java.major))
            record = kafka.start_node(java.java, lib, nodes[node_id], cds=cds)
            state.processes[record.name] = record
            state.save()
            await kafka.wait_ready(self._bootstrap(state), {node_id}, [record])

    # -- status and down ------------------------------------------------------------------------

    def _require_state(self) -> StackState:
        state = StackState.load(self.run_dir)
        if state is None:
            raise StackError(
                f"no local stack is set up in {self.run_dir}", hint="run `boxbus dev up` first"
            )
        return state

    @staticmethod
    def _process_names(state: StackState, component: Component) -> list[str]:
        if component is Component.KAFKA:
            return [f"kafka-{k.node_id}" for k in state.ports.kafka]
        return [component.value]

    def _component_alive(self, state: StackState, component: Component) -> bool:
        names = self._process_names(state, component)
        return all(
            n in state.processes and procs.is_alive(state.processes[n]) for n in names
        )

    def _bootstrap(self, state: StackState) -> str:
        return ",".join(f"127.0.0.1:{k.port}" for k in state.ports.kafka)

    def _database_url(self, state: StackState) -> str:
        return f"postgresql://{postgres.SUPERUSER}@127.0.0.1:{state.ports.postgres}/postgres"

    def info(self, state: StackState) -> StackInfo:
        s = self.settings
        components: dict[str, str] = {}
        for c in Component:
            if c in state.components:
                components[c.value] = "running" if self._component_alive(state, c) else "stopped"
        if s.external_kafka:
            components["kafka"] = "external"
        if s.external_database:
            components["postgres"] = "external"
        if s.external_registry:
            components["registry"] = "external"
        if s.external_smtp:
            components["smtp"] = "external"

        def embedded(c: Component) -> bool:
            return c in state.components

        nodes = [
            NodeInfo(
                node_id=k.node_id, address=f"127.0.0.1:{k.port}",
                pid=(rec.pid if (rec := state.processes.get(f"kafka-{k.node_id}")) else None),
                alive=rec is not None and procs.is_alive(rec),
            )
            for k in state.ports.kafka
        ] if embedded(Component.KAFKA) else []
        return StackInfo(
            kafka_bootstrap=s.kafka_bootstrap_servers
            or (self._bootstrap(state) if embedded(Component.KAFKA) else None),
            database_url=(s.database_url.get_secret_value() if s.database_url else None)
            or (self._database_url(state) if embedded(Component.POSTGRES) else None),
            schema_registry_url=s.schema_registry_url
            or (registry.ccompat_url(state.ports.registry) if embedded(Component.REGISTRY)
                else None),
            smtp=SmtpInfo(host=s.smtp_host, port=s.smtp_port, maildir=None)
            if s.external_smtp
            else SmtpInfo(host="127.0.0.1", port=state.ports.smtp,
                          maildir=self.run_dir / "smtp" / "maildir")
            if embedded(Component.SMTP) else SmtpInfo(host=None, port=None, maildir=None),
            nodes=nodes,
            components=components,
            boot_seconds=state.boot_seconds,
            run_dir=self.run_dir,
        )

    def status(self) -> StackInfo | None:
        state = StackState.load(self.run_dir)
        return None if state is None else self.info(state)

    def down(self) -> list[str]:
        """Stop every process `up` started (by pid) and remove the run directory."""
        with locked(self.run_dir):
            state = StackState.load(self.run_dir)
            stopped: list[str] = []
            if state is not None:
                alive = [r for r in state.processes.values() if procs.is_alive(r)]
                # Everything but PostgreSQL at once (the registry may hold connections to it).
                procs.stop_all([r for r in alive if r.name != "postgres"], timeout=10)
                procs.stop_all([r for r in alive if r.name == "postgres"], timeout=10)
                stopped = [r.name for r in alive]
            postgres.remove(self.run_dir)
        shutil.rmtree(self.run_dir, ignore_errors=True)
        return stopped
