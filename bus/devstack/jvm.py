"""Java runtimes and the JVM artifacts of the stack (Kafka broker jars, Apicurio Registry,
S3Proxy).

Artifacts come from Maven Central through Maven itself, driven by the poms in ``deploy/jvm``;
nothing here knows a download address. Each artifact set is fetched once into the cache
(``<cache>/jvm/<name>-<version>``) and marked complete only after Maven succeeded, so an
interrupted fetch is redone rather than half-used.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from bus.errors import PrerequisiteError
from bus.log import get_logger

log = get_logger(__name__)

_POM_NS = {"m": "http://maven.apache.org/POM/4.0.0"}
_JVM_DIRS = (Path("/usr/lib/jvm"), Path("/usr/local/lib/jvm"), Path("/opt/java"))


@dataclass(frozen=True)
class JavaRuntime:
    java: Path
    major: int


def java_major(java: Path) -> int | None:
    """The feature version of a ``java`` executable (17, 21, 25, ...), or None if it won't run."""
    try:
        out = subprocess.run(
            [str(java), "-XshowSettings:properties", "-version"],
            capture_output=True, text=True, timeout=20, check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"java\.specification\.version = (\d+)", out.stderr)
    return int(match.group(1)) if match else None


def _candidates(preferred_home: Path | None, search_system: bool) -> list[Path]:
    found: list[Path] = []
    if preferred_home is not None:
        found.append(preferred_home / "bin" / "java")
    if os.environ.get("JAVA_HOME"):
        found.append(Path(os.environ["JAVA_HOME"]) / "bin" / "java")
    on_path = shutil.which("java")
    if on_path:
        found.append(Path(on_path))
    if search_system:
        for root in _JVM_DIRS:
            if root.is_dir():
                found.extend(sorted(p / "bin" / "java" for p in root.iterdir()))
    return [p for p in dict.fromkeys(found) if p.is_file()]


def find_java(
    min_major: int,
    *,
    purpose: str,
    preferred_home: Path | None = None,
    search_system: bool = True,
) -> JavaRuntime:
    """The first Java runtime of at least ``min_major``: ``preferred_home``, JAVA_HOME, PATH,
    then (with ``search_system``) the usual JVM folders. Raises PrerequisiteError naming what
    was found and what to do."""
    seen: list[str] = []
    for java in _candidates(preferred_home, search_system):
        major = java_major(java)
        seen.append(f"{java} is Java {major or 'unknown'}")
        if major is not None and major >= min_major:
            return JavaRuntime(java=java, major=major)
    where = "PATH or in JAVA_HOME" + (
        " (nor in " + ", ".join(map(str, _JVM_DIRS)) + ")" if search_system else "")
    found = "; ".join(seen) if seen else f"there is no `java` on {where}"
    raise PrerequisiteError(
        f"{purpose} needs Java {min_major} or newer, and {found}",
        hint=f"install a JDK {min_major}+ (Debian: apt-get install openjdk-{max(min_major, 17)}"
        "-jdk-headless, where the release has it) and put it first on PATH or set JAVA_HOME; "
        "the registry also looks in BOXBUS_REGISTRY_JAVA_HOME",
    )


@dataclass(frozen=True)
class ArtifactSet:
    """One pom under deploy/jvm and what Maven makes of it."""

    name: str
    pom: Path
    version_property: str
    goal: list[str]
    output_subdir: str  # where Maven writes, inside the artifact folder
    expect: str  # a path that must exist after a good fetch

    def version(self) -> str:
        root = ET.parse(self.pom).getroot()
        node = root.find(f"m:properties/m:{self.version_property}", _POM_NS)
        if node is None or not node.text:
            raise PrerequisiteError(f"{self.pom} has no <{self.version_property}> property")
        return node.text.strip()

    def target(self, cache_dir: Path) -> Path:
        return cache_dir / "jvm" / f"{self.name}-{self.version()}"


def kafka_artifacts(deploy_dir: Path) -> ArtifactSet:
    return ArtifactSet(
        name="kafka",
        pom=deploy_dir / "jvm" / "kafka" / "pom.xml",
        version_property="kafka.version",
        goal=["dependency:copy-dependencies", "-DincludeScope=runtime"],
        output_subdir="lib",
        expect="lib",
    )


def registry_artifacts(deploy_dir: Path) -> ArtifactSet:
    return ArtifactSet(
        name="apicurio-registry",
        pom=deploy_dir / "jvm" / "apicurio" / "pom.xml",
        version_property="apicurio.version",
        goal=["dependency:unpack"],
        output_subdir=".",
        expect="quarkus-run.jar",
    )


def objectstore_artifacts(deploy_dir: Path) -> ArtifactSet:
    return ArtifactSet(
        name="s3proxy",
        pom=deploy_dir / "jvm" / "s3proxy" / "pom.xml",
        version_property="s3proxy.version",
        goal=["dependency:copy-dependencies", "-DincludeScope=runtime"],
        output_subdir="lib",
        expect="lib",
    )


def check_fetchable(artifacts: ArtifactSet, cache_dir: Path) -> None:
    """Fail now, before anything starts, if the artifacts are not cached and Maven is missing."""
    if not (artifacts.target(cache_dir) / ".complete").exists() and shutil.which("mvn") is None:
        raise PrerequisiteError(
            f"Maven (mvn) is not on PATH; it fetches the {artifacts.name} artifacts once",
            hint="install Maven (apt-get install maven) and run again",
        )


def ensure_artifacts(artifacts: ArtifactSet, cache_dir: Path) -> Path:
    """Fetch an artifact set into the cache unless it is there; returns its folder."""
    target = artifacts.target(cache_dir)
    marker = target / ".complete"
    if marker.exists():
        return target
    mvn = shutil.which("mvn")
    if mvn is None:
        raise PrerequisiteError(
            f"Maven (mvn) is not on PATH; it fetches the {artifacts.name} artifacts once",
            hint="install Maven (apt-get install maven) and run again",
        )
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    log_path = target.with_name(target.name + ".mvn.log")
    log.info("fetching JVM artifacts", artifacts=artifacts.name, version=artifacts.version())
    with open(log_path, "w") as out:
        result = subprocess.run(
            [mvn, "-B", "-q", "-f", str(artifacts.pom), *artifacts.goal,
             f"-DoutputDirectory={(staging / artifacts.output_subdir).resolve()}"],
            stdout=out, stderr=subprocess.STDOUT, check=False,
        )
    if result.returncode != 0 or not (staging / artifacts.expect).exists():
        shutil.rmtree(staging, ignore_errors=True)
        raise PrerequisiteError(
            f"Maven could not fetch the {artifacts.name} {artifacts.version()} artifacts "
            f"(exit {result.returncode})",
            hint="check that Maven can reach its repository (mvn -v; ~/.m2/settings.xml) and "
            "run again",
            log_path=log_path,
        )
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    marker.write_text(artifacts.version() + "\n")
    return target
