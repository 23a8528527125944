"""`boxbus asyncapi export` writes AsyncAPI 3.0 documents that the AsyncAPI project's own parser
(from the npm registry, with its Avro schema parser for the payloads) accepts: the contract
alone, and the demo network with a channel per topic. A document it should refuse (a payload
that is no Avro schema) is refused, so the check is not a formality."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from bus import Settings
from tests.conftest import REPO, boxbus_cli

PARSER = {"@asyncapi/parser": "3.6.6", "@asyncapi/avro-schema-parser": "3.1.0"}
SCRIPT = Path(__file__).with_name("asyncapi_validate.cjs")


@pytest.fixture(scope="module")
def node_modules() -> Path:
    """The parser, installed once into the cache (BOXBUS_CACHE_DIR)."""
    npm = shutil.which("npm")
    assert npm and shutil.which("node"), "Node.js and npm are needed to validate AsyncAPI"
    tag = "-".join(f"{name.split('/')[-1]}{version}" for name, version in PARSER.items())
    prefix = Settings().cache_dir / "npm" / tag
    modules = prefix / "node_modules"
    if not (modules / "@asyncapi" / "avro-schema-parser").is_dir():
        prefix.mkdir(parents=True, exist_ok=True)
        subprocess.run([npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund",
                        "--silent", *(f"{n}@{v}" for n, v in PARSER.items())],
                       check=True, timeout=600)
    return modules


def validate(document: Path, modules: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["node", str(SCRIPT), str(document)], capture_output=True, text=True,
                          env={**os.environ, "NODE_PATH": str(modules)}, timeout=120)


@pytest.mark.parametrize("topology", [None, "deploy/topology/demo.yaml"])
def test_exported_documents_are_valid_asyncapi(topology: str | None, tmp_path: Path,
                                               node_modules: Path) -> None:
    out = tmp_path / "asyncapi.yaml"
    argv = [*boxbus_cli(), "asyncapi", "export", "-o", str(out)]
    if topology:
        argv += ["--topology", str(REPO / topology)]
    subprocess.run(argv, check=True, capture_output=True, text=True, timeout=60,
                   env={**os.environ, "BOXBUS_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092",
                        "BOXBUS_SCHEMA_REGISTRY_URL": "http://127.0.0.1:8081"})
    checked = validate(out, node_modules)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    parsed = checked.stdout.strip().splitlines()[-1]
    assert parsed.startswith("parsed:")
    if topology:  # every topic the demo makes is a channel; each of its 9 boxes sends, receives
        # (58, and the partner's ingress topic with its dead letters and quarantine, its
        # undeliverable mail, and the mail topic's dead letters)
        assert "79 channels" in parsed and "30 operations" in parsed, parsed


def test_a_payload_that_is_no_avro_schema_is_refused(tmp_path: Path,
                                                     node_modules: Path) -> None:
    done = subprocess.run([*boxbus_cli(), "asyncapi", "export", "--json"], check=True,
                          capture_output=True, text=True, timeout=60)
    doc = json.loads(done.stdout)
    message = doc["components"]["messages"]["boxbus_orders_OrderPlaced"]
    message["payload"]["schema"] = {"type": "recordx", "name": "Broken"}  # no Avro type
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(doc))
    checked = validate(broken, node_modules)
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert "error" in checked.stdout
