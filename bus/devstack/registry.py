"""Apicurio Registry 3.x (a Quarkus fast-jar from Maven Central), serving the Confluent schema
registry API at ``/apis/ccompat/v7`` on loopback.

Storage is in-memory by default (fast, gone with the process); ``postgres`` storage keeps
schemas in a ``schema_registry`` database on the stack's PostgreSQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from urllib.parse import unquote, urlsplit

import httpx

from bus.devstack import procs

MIN_JAVA = 21  # Apicurio 3.3 is compiled for Java 21 (class file version 65)
CCOMPAT_PATH = "/apis/ccompat/v7"


class RegistryStorage(StrEnum):
    MEMORY = "memory"
    POSTGRES = "postgres"


@dataclass(frozen=True)
class JdbcTarget:
    url: str
    username: str
    password: str

    @classmethod
    def from_dsn(cls, dsn: str) -> JdbcTarget:
        """postgresql://user:pass@host:port/db -> the JDBC URL and credentials Quarkus wants."""
        parts = urlsplit(dsn)
        host = parts.hostname or procs.LOOPBACK
        port = parts.port or 5432
        return cls(
            url=f"jdbc:postgresql://{host}:{port}{parts.path}",
            username=unquote(parts.username or ""),
            password=unquote(parts.password or ""),
        )


def ccompat_url(port: int) -> str:
    return f"http://127.0.0.1:{port}{CCOMPAT_PATH}"


def start(
    java: Path,
    app_dir: Path,
    port: int,
    management_port: int,
    log_path: Path,
    *,
    storage: RegistryStorage = RegistryStorage.MEMORY,
    jdbc: JdbcTarget | None = None,
    cds_archive: Path | None = None,
) -> procs.ProcessRecord:
    env = {
        "QUARKUS_HTTP_HOST": "127.0.0.1",
        "QUARKUS_HTTP_PORT": str(port),
        # The management interface (health, metrics) would listen on 0.0.0.0:9000 otherwise.
        "QUARKUS_MANAGEMENT_HOST": "127.0.0.1",
        "QUARKUS_MANAGEMENT_PORT": str(management_port),
        "QUARKUS_LOG_LEVEL": "WARN",
        "QUARKUS_LOG_CATEGORY__IO_APICURIO__LEVEL": "WARN",
        "QUARKUS_LOG_CATEGORY__IO_QUARKUS__LEVEL": "INFO",
        # Loopback only, no authentication in the local stack.
    }
    if storage is RegistryStorage.POSTGRES:
        if jdbc is None:
            raise ValueError("postgres storage needs a database")
        env |= {
            "APICURIO_STORAGE_KIND": "sql",
            "APICURIO_STORAGE_SQL_KIND": "postgresql",
            "APICURIO_DATASOURCE_URL": jdbc.url,
            "APICURIO_DATASOURCE_USERNAME": jdbc.username,
            "APICURIO_DATASOURCE_PASSWORD": jdbc.password,
        }
    flags = ["-Xms64m", "-Xmx384m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
             "-Djava.awt.headless=true"]
    if cds_archive is not None:
        # Java 19+: the archive is written at the first clean exit and used from then on.
        flags += ["-XX:+AutoCreateSharedArchive", f"-XX:SharedArchiveFile={cds_archive}",
                  "-Xlog:cds=off", "-Xlog:cds+dynamic=off"]
    argv = [str(java), *flags, "-jar", str(app_dir / "quarkus-run.jar")]
    return procs.spawn("registry", argv, log_path=log_path, env=env, cwd=app_dir)


async def wait_ready(url: str, record: procs.ProcessRecord, *, timeout: float = 90.0) -> None:
    """Ready when the Confluent API lists subjects (a real request, not a health probe)."""
    async with httpx.AsyncClient(timeout=2.0) as client:

        async def answers() -> bool:
            try:
                return (await client.get(f"{url}/subjects")).status_code == 200
            except httpx.HTTPError:
                return False

        await procs.wait_until(
            answers, what="the schema registry", records=[record], timeout=timeout,
            hint="read the log; a port in use or a Java older than 21 are the usual causes",
        )
