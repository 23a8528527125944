"""The embedded local stack: Kafka (1 or 3 KRaft nodes), PostgreSQL, the schema registry, an
SMTP server and an S3-compatible object store (S3Proxy), started in parallel as background
processes on 127.0.0.1.

``up`` checks every prerequisite before it starts anything, then starts what is not running
(a whole component, or just the Kafka nodes that died) and waits until a real client request to
each succeeds; the first failure cancels the other starts and stops what this call started.
Every process is written into the run state as soon as it exists, so ``down`` (from any shell)
stops exactly those, by pid. A service given in the settings (an external Kafka, database,
registry, SMTP server or object store) is used as it is and never started.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr

from bus.db import create_database
from bus.devstack import jvm, kafka, postgres, procs, registry, s3proxy, smtp
from bus.devstack.state import (
    ALL_COMPONENTS,
    Component,
    KafkaPorts,
    Ports,
    StackState,
    locked,
)
from bus.errors import BoxbusError, ConfigError, PortInUseError, PrerequisiteError, StackError
from bus.kafka import KafkaAccess
from bus.log import get_logger
from bus.resources import deploy_dir
from bus.settings import SaslMechanism, SecurityProtocol, Settings

log = get_logger(__name__)

KAFKA_MIN_JAVA = 17
PORTS_USED = 11
DEFAULT_DEPLOY_DIR = deploy_dir()


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
    # How the operator logs in to the embedded Kafka: a JSON file (mode 0600) with the keys
    # of `boxbus box credentials --json`; None for an external Kafka (its BOXBUS_KAFKA_*).
    kafka_credentials: Path | None = None
    database_url: str | None
    schema_registry_url: str | None
    smtp: SmtpInfo
    # The S3-compatible object store (bus.objectstore) and its bucket; for the embedded one,
    # a JSON file (mode 0600) with its address, bucket and keys (the BOXBUS_OBJECT_STORE_*
    # settings: see object_store_env); None for an external store (its settings name it).
    object_store_url: str | None = None
    object_store_bucket: str | None = None
    object_store_credentials: Path | None = None
    nodes: list[NodeInfo]
    components: dict[str, str]
    processes: dict[str, int]
    boot_seconds: dict[str, float]
    run_dir: Path

    def kafka_access(self, settings: Settings) -> KafkaAccess:
        """The operator's connection to this stack's Kafka: the embedded cluster's admin
        credentials, or what the settings say for an external Kafka."""
        if self.kafka_bootstrap is None:
            raise StackError("this stack runs no Kafka",
                             hint="`boxbus dev up` without --only, or BOXBUS_KAFKA_*")
        if self.kafka_credentials is None:
            return KafkaAccess.from_settings(settings, self.kafka_bootstrap)
        return read_credentials(self.kafka_credentials)

    def object_store_env(self) -> dict[str, str]:
        """The BOXBUS_OBJECT_STORE_* variables under which a process uses this stack's
        embedded object store; empty for an external store (the settings name it already)
        or a stack without one."""
        if self.object_store_credentials is None:
            return {}
        found = s3proxy.read_credentials(self.object_store_credentials)
        return {"BOXBUS_OBJECT_STORE_URL": str(found["url"]),
                "BOXBUS_OBJECT_STORE_REGION": str(found["region"]),
                "BOXBUS_OBJECT_STORE_BUCKET": str(found["bucket"]),
                "BOXBUS_OBJECT_STORE_ACCESS_KEY": str(found["access_key"]),
                "BOXBUS_OBJECT_STORE_SECRET_KEY": str(found["secret_key"])}

    def object_store_settings(self, settings: Settings) -> Settings:
        """``settings`` with this stack's embedded object store filled in, for
        ``ObjectStore.from_settings``; unchanged when they name a store already."""
        if settings.object_store_url is not None or self.object_store_credentials is None:
            return settings
        found = s3proxy.read_credentials(self.object_store_credentials)
        return settings.model_copy(update={
            "object_store_url": str(found["url"]),
            "object_store_region": str(found["region"]),
            "object_store_bucket": str(found["bucket"]),
            "object_store_access_key": str(found["access_key"]),
            "object_store_secret_key": SecretStr(str(found["secret_key"])),
        })


def read_credentials(path: Path) -> KafkaAccess:
    """A connection from a credentials file (the keys of `boxbus box credentials --json`)."""
    try:
        found = json.loads(path.read_text())
        return KafkaAccess(
            bootstrap=found["bootstrap_servers"],
            security_protocol=SecurityProtocol(found["security_protocol"]),
            sasl_mechanism=SaslMechanism(found["sasl_mechanism"]),
            username=found["username"], password=SecretStr(found["password"]))
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"cannot read the Kafka credentials in {path}: {exc}",
                          hint="they are written by `boxbus dev up`; run it again, or "
                          "`boxbus dev down` and up to start afresh") from exc


class LocalStack:
    """Start, inspect and stop the local stack kept in ``settings.run_dir``.

    ``nodes``, ``components`` and ``registry_storage`` left as None mean "what is set up
    already, else the default" (one node, every component, in-memory storage). Given
    explicitly, nodes and storage must match a stack that is set up; components are added.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        nodes: int | None = None,
        components: frozenset[Component] | None = None,
        registry_storage: registry.RegistryStorage | None = None,
        base_port: int | None = None,
        deploy_dir: Path = DEFAULT_DEPLOY_DIR,
    ) -> None:
        if nodes not in (None, 1, 3):
            raise StackError(f"--nodes must be 1 or 3, got {nodes}")
        self.settings = settings
        self.run_dir = settings.run_dir
        self.nodes = nodes
        self.components = components
        self.registry_storage = registry_storage
        self.base_port = settings.dev_base_port if base_port is None else base_port
        self.deploy_dir = deploy_dir

    # -- what this stack starts itself ----------------------------------------------------------

    def _external(self, component: Component) -> bool:
        s = self.settings
        return {
            Component.KAFKA: s.external_kafka,
            Component.POSTGRES: s.external_database,
            Component.REGISTRY: s.external_registry,
            Component.SMTP: s.external_smtp,
            Component.OBJECT_STORE: s.external_object_store,
        }[component]

    def _new_state(self) -> StackState:
        # The same layout for one node or three, so addresses don't move: B..B+2 Kafka
        # clients, B+3..B+5 controllers, then PostgreSQL, registry, SMTP, registry management,
        # object store.
        numbers = (
            procs.free_ports(PORTS_USED) if self.base_port == 0
            else list(range(self.base_port, self.base_port + PORTS_USED))
        )
        kafka_ports = [
            KafkaPorts(node_id=i + 1, port=numbers[i], controller_port=numbers[3 + i])
            for i in range(self.nodes or 1)
        ]
        return StackState(
            run_dir=self.run_dir,
            components=[c for c in Component
                        if c in (self.components or ALL_COMPONENTS) and not self._external(c)],
            registry_storage=self.registry_storage or registry.RegistryStorage.MEMORY,
            ports=Ports(kafka=kafka_ports, postgres=numbers[6], registry=numbers[7],
                        smtp=numbers[8], registry_management=numbers[9],
                        object_store=numbers[10]),
            cluster_id=kafka.new_cluster_id(),
        )

    @staticmethod
    def _spare_port(state: StackState) -> int:
        """A port for the object store of a stack set up before it had one: where the layout
        puts it (B+10) if that is free, else any free port."""
        laid_out = state.ports.kafka[0].port + PORTS_USED - 1
        return laid_out if procs.port_is_free(laid_out) else procs.free_ports(1)[0]

    def _check_matches(self, state: StackState) -> None:
        if self.nodes is not None and self.nodes != state.nodes:
            raise StackError(
                f"a {state.nodes}-node stack is already set up in {self.run_dir}",
                hint="run `boxbus dev down` first, or use another BOXBUS_RUN_DIR",
            )
        if self.registry_storage is not None and self.registry_storage != state.registry_storage:
            raise StackError(
                f"the stack in {self.run_dir} keeps registry schemas in "
                f"{state.registry_storage.value}, not {self.registry_storage.value}",
                hint="run `boxbus dev down` first to change where the registry keeps schemas",
            )

    @staticmethod
    def _names(state: StackState, component: Component) -> list[str]:
        if component is Component.KAFKA:
            return [f"kafka-{k.node_id}" for k in state.ports.kafka]
        return [component.value]

    @staticmethod
    def _alive(state: StackState, name: str) -> bool:
        record = state.processes.get(name)
        return record is not None and procs.is_alive(record)

    def _dead(self, state: StackState) -> dict[Component, list[str]]:
        """Per component, the processes that should run and don't."""
        dead = {}
        for component in state.components:
            names = [n for n in self._names(state, component) if not self._alive(state, n)]
            if names:
                dead[component] = names
        return dead

    # -- up -------------------------------------------------------------------------------------

    async def up(self) -> StackInfo:
        with locked(self.run_dir):
            state = StackState.load(self.run_dir)
            if state is None:
                state = self._new_state()
            else:
                self._check_matches(state)
                wanted = {c for c in self.components or () if not self._external(c)}
                state.components = sorted(set(state.components) | wanted)
                if (Component.OBJECT_STORE in state.components
                        and state.ports.object_store is None):
                    state.ports = state.ports.model_copy(
                        update={"object_store": self._spare_port(state)})
            dead = self._dead(state)
            if dead:
                await self._start(state, dead)
            return self.info(state)

    async def _start(self, state: StackState, dead: dict[Component, list[str]]) -> None:
        # Everything that can fail without side effects fails here, before anything starts.
        kafka_java = registry_java = None
        if Component.KAFKA in dead:
            kafka_java = jvm.find_java(KAFKA_MIN_JAVA, purpose="Apache Kafka",
                                       search_system=False)
            jvm.check_fetchable(jvm.kafka_artifacts(self.deploy_dir), self.settings.cache_dir)
        if Component.REGISTRY in dead:
            registry_java = jvm.find_java(registry.MIN_JAVA, purpose="Apicurio Registry",
                                          preferred_home=self.settings.registry_java_home)
            jvm.check_fetchable(jvm.registry_artifacts(self.deploy_dir),
                                self.settings.cache_dir)
            if (state.registry_storage is registry.RegistryStorage.POSTGRES
                    and self._database_url(state) is None):
                raise StackError("registry storage 'postgres' needs a database: the postgres "
                                 "component or BOXBUS_DATABASE_URL")
        store_java = None
        if Component.OBJECT_STORE in dead:
            store_java = jvm.find_java(s3proxy.MIN_JAVA, purpose="S3Proxy (the object store)")
            jvm.check_fetchable(jvm.objectstore_artifacts(self.deploy_dir),
                                self.settings.cache_dir)
            if importlib.util.find_spec("aiobotocore") is None:
                raise PrerequisiteError(
                    "the aiobotocore package (the S3 client the stack checks its object store "
                    "with) is not installed",
                    hint="pip install 'boxbus[stack]'; or leave the store out (`boxbus dev up "
                    "--only kafka,postgres,registry,smtp`), or set BOXBUS_OBJECT_STORE_URL")
        if Component.POSTGRES in dead:
            postgres.install_dir(self.settings.postgres_install_dir)
        self._check_ports(state, dead)
        state.save()

        started_at = time.monotonic()
        postgres_ready = asyncio.Event()
        if Component.POSTGRES not in dead:
            postgres_ready.set()
        steps: dict[str, Coroutine[Any, Any, None]] = {}
        if kafka_java is not None:
            steps["kafka"] = self._start_kafka(state, kafka_java, dead[Component.KAFKA])
        if Component.POSTGRES in dead:
            steps["postgres"] = self._start_postgres(state, postgres_ready)
        if registry_java is not None:
            steps["registry"] = self._start_registry(state, registry_java, postgres_ready)
        if Component.SMTP in dead:
            steps["smtp"] = self._start_smtp(state)
        if store_java is not None:
            steps["objectstore"] = self._start_objectstore(state, store_java)
        try:
            # The first failure cancels the other starts: nothing waits on a dead dependency.
            async with asyncio.TaskGroup() as group:
                for step in steps.values():
                    group.create_task(step)
        except BaseExceptionGroup as failed:
            # Leave nothing half-running: stop what this call started, keep the logs.
            names = [n for names in dead.values() for n in names]
            procs.stop_all([state.processes.pop(n) for n in names if n in state.processes],
                           timeout=5)
            state.save()
            first = _first_error(failed)
            raise first from None
        finally:
            state.boot_seconds["total"] = round(time.monotonic() - started_at, 2)
            state.save()

    def _check_ports(self, state: StackState, dead: dict[Component, list[str]]) -> None:
        needed: list[tuple[str, int]] = []
        for k in state.ports.kafka:
            if f"kafka-{k.node_id}" in dead.get(Component.KAFKA, []):
                needed += [(f"kafka node {k.node_id}", k.port),
                           (f"kafka node {k.node_id} controller", k.controller_port)]
        if Component.POSTGRES in dead:
            needed.append(("postgres", state.ports.postgres))
        if Component.REGISTRY in dead:
            needed += [("registry", state.ports.registry),
                       ("registry management", state.ports.registry_management)]
        if Component.SMTP in dead:
            needed.append(("smtp", state.ports.smtp))
        if Component.OBJECT_STORE in dead:
            assert state.ports.object_store is not None  # given by up() when it was missing
            needed.append(("objectstore", state.ports.object_store))
        for what, port in needed:
            if not procs.port_is_free(port):
                raise PortInUseError(
                    f"port {port} on {procs.LOOPBACK}, wanted for {what}, is in use by another "
                    "process",
                    hint=f"stop that process (see `ss -ltnp 'sport = :{port}'`), or move the "
                    "stack: `boxbus dev down`, then `boxbus dev up --base-port N` (or "
                    "BOXBUS_DEV_BASE_PORT); it uses eleven ports from N",
                )

    def _record(self, state: StackState, name: str, began: float) -> None:
        state.boot_seconds[name] = round(time.monotonic() - began, 2)
        state.save()
        log.info("component ready", component=name, seconds=state.boot_seconds[name])

    async def _fetch(self, state: StackState, artifacts: jvm.ArtifactSet) -> Path:
        """The artifacts' folder; a first fetch is timed apart from the boot it precedes."""
        began = time.monotonic()
        folder = await asyncio.to_thread(jvm.ensure_artifacts, artifacts, self.settings.cache_dir)
        state.boot_seconds[f"fetch {artifacts.name}"] = round(time.monotonic() - began, 2)
        return folder

    def _kafka_nodes(self, state: StackState) -> list[kafka.KafkaNode]:
        return [
            kafka.KafkaNode(node_id=k.node_id, port=k.port, controller_port=k.controller_port,
                            home=self.run_dir / "kafka" / f"node-{k.node_id}")
            for k in state.ports.kafka
        ]

    def _kafka_secrets(self) -> kafka.ClusterSecrets:
        return kafka.ClusterSecrets.load_or_new(self.run_dir / "kafka" / "credentials.json")

    def _admin_file(self) -> Path:
        return self.run_dir / "kafka" / "admin.json"

    async def _start_kafka(
        self, state: StackState, java: jvm.JavaRuntime, dead_names: list[str]
    ) -> None:
        lib = await self._fetch(state, jvm.kafka_artifacts(self.deploy_dir)) / "lib"
        began = time.monotonic()
        cluster = self._kafka_nodes(state)
        keys = self._kafka_secrets()
        kafka.write_admin_credentials(self._admin_file(),
                                      ",".join(n.address for n in cluster), keys)
        nodes = [n for n in cluster if f"kafka-{n.node_id}" in dead_names]
        for node in nodes:
            kafka.write_config(node, cluster, keys, self.settings.dev_kafka_session_seconds)
        await asyncio.gather(*(
            asyncio.to_thread(kafka.format_storage, java.java, lib, node, state.cluster_id,
                              keys)
            for node in nodes
        ))
        cds = kafka.cds_flags(kafka.cds_archive(self.settings.cache_dir, lib, java.major))
        records = []
        for node in nodes:
            record = kafka.start_node(java.java, lib, node, cds=cds)
            state.processes[record.name] = record
            records.append(record)
        state.save()
        await kafka.wait_ready(nodes, records, keys)
        self._record(state, "kafka", began)

    async def _start_postgres(self, state: StackState, ready: asyncio.Event) -> None:
        began = time.monotonic()
        home = await asyncio.to_thread(
            postgres.prepare, self.run_dir, state.ports.postgres, state.postgres_dir,
            self.settings.postgres_install_dir)
        state.postgres_dir = home.base
        state.save()
        await postgres.wait_for_previous(home)
        password = postgres.superuser_password(self.run_dir)
        await asyncio.to_thread(postgres.initdb, home, password)
        record = postgres.start(home)
        state.processes[record.name] = record
        state.save()
        await postgres.wait_ready(state.ports.postgres, record, password)
        ready.set()
        self._record(state, "postgres", began)

    async def _start_registry(
        self, state: StackState, java: jvm.JavaRuntime, postgres_ready: asyncio.Event
    ) -> None:
        app_dir = await self._fetch(state, jvm.registry_artifacts(self.deploy_dir))
        began = time.monotonic()
        jdbc = None
        if state.registry_storage is registry.RegistryStorage.POSTGRES:
            await postgres_ready.wait()
            server = self._database_url(state)
            assert server is not None  # checked with the prerequisites
            jdbc = registry.JdbcTarget.from_dsn(
                await create_database(server, "schema_registry"))
        cds = self.settings.cache_dir / "cds" / f"registry-{app_dir.name}-java{java.major}.jsa"
        cds.parent.mkdir(parents=True, exist_ok=True)
        record = registry.start(
            java.java, app_dir, state.ports.registry, state.ports.registry_management,
            self.run_dir / "registry" / "registry.log",
            storage=state.registry_storage, jdbc=jdbc, cds_archive=cds,
        )
        state.processes[record.name] = record
        state.save()
        await registry.wait_ready(registry.ccompat_url(state.ports.registry), record)
        self._record(state, "registry", began)

    async def _start_smtp(self, state: StackState) -> None:
        began = time.monotonic()
        record = smtp.start(sys.executable, state.ports.smtp, self._maildir(),
                            self.run_dir / "smtp" / "smtp.log")
        state.processes[record.name] = record
        state.save()
        await smtp.wait_ready(state.ports.smtp, record)
        self._record(state, "smtp", began)

    def _store_home(self) -> s3proxy.StoreHome:
        return s3proxy.StoreHome(self.run_dir / "objectstore")

    async def _start_objectstore(self, state: StackState, java: jvm.JavaRuntime) -> None:
        lib = await self._fetch(state, jvm.objectstore_artifacts(self.deploy_dir)) / "lib"
        began = time.monotonic()
        port = state.ports.object_store
        assert port is not None  # given by up() when it was missing
        home = self._store_home()
        keys = s3proxy.StoreKeys.load_or_new(home.credentials)
        bucket = self.settings.object_store_bucket
        s3proxy.write_credentials(home.credentials, keys, port=port, region=s3proxy.REGION,
                                  bucket=bucket)
        s3proxy.write_config(home, port, keys)
        record = s3proxy.start(java.java, lib, home)
        state.processes[record.name] = record
        state.save()
        await s3proxy.wait_ready(port, keys, bucket, record)
        self._record(state, "objectstore", began)

    # -- setup: artifacts and the broker's class-data archive -----------------------------------

    def fetch(self) -> dict[str, Path]:
        """Fetch the JVM artifacts into the cache, and make the broker's class-data archive
        (what `make setup` does). The archive only speeds boots up: failing to make it is
        logged, never fatal."""
        cache = self.settings.cache_dir
        found = {
            "kafka": jvm.ensure_artifacts(jvm.kafka_artifacts(self.deploy_dir), cache),
            "registry": jvm.ensure_artifacts(jvm.registry_artifacts(self.deploy_dir), cache),
            "objectstore": jvm.ensure_artifacts(jvm.objectstore_artifacts(self.deploy_dir),
                                                cache),
        }
        java = jvm.find_java(KAFKA_MIN_JAVA, purpose="Apache Kafka", search_system=False)
        lib = found["kafka"] / "lib"
        archive = kafka.cds_archive(cache, lib, java.major)
        try:
            with tempfile.TemporaryDirectory(prefix="boxbus-cds-") as work:
                if asyncio.run(kafka.train_cds_archive(java.java, lib, archive, Path(work))):
                    found["kafka class-data archive"] = archive
        except (BoxbusError, OSError) as exc:
            log.warning("no class-data archive for Kafka; boots are a second slower",
                        reason=str(exc))
        return found

    # -- nodes (fault tests) ------------------------------------------------------------------

    def _node_record(self, state: StackState, node_id: int) -> procs.ProcessRecord:
        record = state.processes.get(f"kafka-{node_id}")
        if record is None:
            raise StackError(f"there is no Kafka node {node_id} in {self.run_dir}",
                             hint="`boxbus dev status` lists the nodes")
        return record

    def kill_node(self, node_id: int) -> None:
        """SIGKILL one Kafka node, as a crash would."""
        with locked(self.run_dir):
            procs.kill(self._node_record(self._require_state(), node_id))

    async def start_node(self, node_id: int) -> None:
        """Start one Kafka node again, exactly as it was started, on its data; wait until it is
        back in the cluster."""
        with locked(self.run_dir):
            state = self._require_state()
            old = self._node_record(state, node_id)
            if procs.is_alive(old):
                return
            (node,) = [n for n in self._kafka_nodes(state) if n.node_id == node_id]
            record = procs.respawn(old)
            state.processes[record.name] = record
            state.save()
            await kafka.wait_ready([node], [record], self._kafka_secrets())

    # -- status and down ------------------------------------------------------------------------

    def _require_state(self) -> StackState:
        state = StackState.load(self.run_dir)
        if state is None:
            raise StackError(f"no local stack is set up in {self.run_dir}",
                             hint="run `boxbus dev up` first")
        return state

    def _maildir(self) -> Path:
        return self.run_dir / "smtp" / "maildir"

    def _database_url(self, state: StackState) -> str | None:
        if self.settings.database_url is not None:
            return self.settings.database_url.get_secret_value()
        if Component.POSTGRES in state.components:
            return postgres.url(state.ports.postgres,
                                password=postgres.superuser_password(self.run_dir))
        return None

    def info(self, state: StackState) -> StackInfo:
        s = self.settings
        components = {c.value: "external" for c in Component if self._external(c)}
        for c in state.components:
            alive = all(self._alive(state, n) for n in self._names(state, c))
            components[c.value] = "running" if alive else "stopped"
        embedded = set(state.components)
        nodes = [
            NodeInfo(
                node_id=k.node_id, address=f"{procs.LOOPBACK}:{k.port}",
                pid=(rec.pid if (rec := state.processes.get(f"kafka-{k.node_id}")) else None),
                alive=self._alive(state, f"kafka-{k.node_id}"),
            )
            for k in state.ports.kafka
        ] if Component.KAFKA in embedded else []
        if s.external_smtp:
            mail = SmtpInfo(host=s.smtp_host, port=s.smtp_port, maildir=None)
        elif Component.SMTP in embedded:
            mail = SmtpInfo(host=procs.LOOPBACK, port=state.ports.smtp, maildir=self._maildir())
        else:
            mail = SmtpInfo(host=None, port=None, maildir=None)
        store_url = store_bucket = None
        store_credentials: Path | None = None
        if s.external_object_store:
            store_url, store_bucket = s.object_store_url, s.object_store_bucket
        elif Component.OBJECT_STORE in embedded and state.ports.object_store is not None:
            store_url = s3proxy.url(state.ports.object_store)
            store_bucket = s.object_store_bucket
            home = self._store_home()
            if home.credentials.exists():
                store_credentials = home.credentials
                with contextlib.suppress(ConfigError):  # the bucket it was started with
                    store_bucket = str(s3proxy.read_credentials(home.credentials)["bucket"])
        return StackInfo(
            kafka_bootstrap=s.kafka_bootstrap_servers or (
                ",".join(n.address for n in nodes) if nodes else None),
            kafka_credentials=(self._admin_file() if nodes and not s.external_kafka
                               else None),
            database_url=self._database_url(state),
            schema_registry_url=s.schema_registry_url or (
                registry.ccompat_url(state.ports.registry)
                if Component.REGISTRY in embedded else None),
            smtp=mail,
            object_store_url=store_url,
            object_store_bucket=store_bucket,
            object_store_credentials=store_credentials,
            nodes=nodes,
            components=dict(sorted(components.items())),
            processes={name: r.pid for name, r in state.processes.items()
                       if procs.is_alive(r)},
            boot_seconds=state.boot_seconds,
            run_dir=self.run_dir,
        )

    def status(self) -> StackInfo | None:
        state = StackState.load(self.run_dir)
        return None if state is None else self.info(state)

    def start_service(self, name: str, argv: Sequence[str], env: Mapping[str, str]
                      ) -> procs.ProcessRecord:
        """Start a long-running boxbus process that lives as long as the stack (the demo's
        aggregator and dashboard): detached, logged to ``services/<name>.log`` in the run
        directory, remembered there, stopped by :meth:`down`."""
        folder = self.run_dir / "services"
        folder.mkdir(parents=True, exist_ok=True)
        record = procs.spawn(name, argv, log_path=folder / f"{name}.log", env=env)
        saved = folder / f"{name}.json"
        saved.touch(mode=0o600)  # its environment may hold a database password
        saved.write_text(record.model_dump_json())
        return record

    def services(self) -> list[procs.ProcessRecord]:
        """The services started with :meth:`start_service` that still run."""
        found = []
        for path in sorted((self.run_dir / "services").glob("*.json")):
            with contextlib.suppress(OSError, ValueError):
                record = procs.ProcessRecord.model_validate_json(path.read_text())
                if procs.is_alive(record):
                    found.append(record)
        return found

    def down(self) -> list[str]:
        """Stop every process `up` started (by pid), and the services started beside it, and
        remove what it made on disk. A directory without boxbus run state is left
        untouched."""
        with locked(self.run_dir):
            state = StackState.load(self.run_dir)
            if state is None:
                return []
            services = self.services()
            procs.stop_all(services, timeout=10)  # they are clients of what follows
            alive = [r for r in state.processes.values() if procs.is_alive(r)]
            # Kafka's data is deleted next, so its controlled shutdown (nodes waiting for the
            # quorum, several seconds with three) buys nothing: a short grace, then SIGKILL.
            # The registry, SMTP server and object store stop cleanly (the registry writes its
            # class-data archive at exit), PostgreSQL last: the registry may hold connections
            # to it.
            procs.stop_all([r for r in alive if r.name.startswith("kafka-")], timeout=2)
            procs.stop_all([r for r in alive if r.name in ("registry", "smtp", "objectstore")],
                           timeout=10)
            procs.stop_all([r for r in alive if r.name == "postgres"], timeout=10)
            if state.postgres_dir is not None:
                shutil.rmtree(state.postgres_dir, ignore_errors=True)
            shutil.rmtree(self.run_dir, ignore_errors=True)
        return [r.name for r in (*services, *alive)]


def with_object_store(settings: Settings) -> Settings:
    """``settings`` naming an object store, for ``ObjectStore.from_settings``: as they are
    when they name one (BOXBUS_OBJECT_STORE_URL), else with the store of the local stack
    running in ``settings.run_dir``; unchanged when there is neither (``from_settings`` then
    says what to do). The way a command finds the store, as it finds the schema registry."""
    if settings.external_object_store:
        return settings
    info = LocalStack(settings).status()
    return settings if info is None else info.object_store_settings(settings)


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The most useful error of a failed start: a boxbus error (it says what to do) first."""
    leaves: list[BaseException] = []

    def collect(error: BaseException) -> None:
        if isinstance(error, BaseExceptionGroup):
            for inner in error.exceptions:
                collect(inner)
        else:
            leaves.append(error)

    collect(group)
    ours = [e for e in leaves if isinstance(e, BoxbusError)]
    return (ours or leaves)[0]
