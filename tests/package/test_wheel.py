"""The built wheel, installed with pip into a clean virtualenv outside the checkout, works: the
library, the SDK and the command line import, the schemas and deployment files come from the
installed package (nothing reaches into a source tree), and the local stack's pieces are an
extra a connector does not need: the box test kit's example runs from the wheel alone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

CHECK = """
import importlib.util, sys
from pathlib import Path
import bus, connectors.box, processors.router
from bus import SchemaCatalog
from bus.resources import deploy_dir, schemas_dir
prefix = Path(sys.prefix).resolve()
assert prefix in schemas_dir().resolve().parents, schemas_dir()
assert len(SchemaCatalog.load()) >= 17
assert (deploy_dir() / "topology" / "demo.yaml").is_file()
assert (deploy_dir() / "jvm" / "kafka" / "pom.xml").is_file()
from importlib.resources import files
mail = files("connectors.mail")  # the mailer's templates and the font its PDFs embed
assert (mail / "templates" / "letter.html.j2").is_file()
assert (mail / "fonts" / "DejaVuSans.ttf").is_file() and (mail / "fonts" / "LICENSE").is_file()
for extra in ("pgserver", "aiosmtpd", "faust", "pytest"):
    assert importlib.util.find_spec(extra) is None, extra
print("ok")
"""


def run(argv: list[str], cwd: Path) -> str:
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{' '.join(argv)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_the_wheel_installs_and_runs_outside_the_checkout(tmp_path: Path) -> None:
    dist, venv = tmp_path / "dist", tmp_path / "venv"
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(REPO)],
        tmp_path)
    (wheel,) = dist.glob("boxbus-*.whl")
    run([sys.executable, "-m", "venv", str(venv)], tmp_path)
    python = venv / "bin" / "python"
    run([str(python), "-m", "pip", "install", "-q", "-c", str(REPO / "constraints.txt"),
         str(wheel)], tmp_path)
    assert run([str(python), "-c", CHECK], tmp_path).strip() == "ok"
    listed = run([str(venv / "bin" / "boxbus"), "schemas", "list"], tmp_path)
    assert "boxbus.orders.OrderPlaced" in listed
    # The README's path for a connector developer: the wheel, then a tested handler, with no
    # Kafka, no registry and no database (the test kit in memory).
    example = tmp_path / "my_connector_test.py"
    example.write_text((REPO / "tests" / "box" / "test_kit_example.py").read_text())
    ran = run([str(python), "-c", "import asyncio, my_connector_test as t; "
               "asyncio.run(t.test_an_order_is_confirmed_once()); print('passed')"], tmp_path)
    assert ran.strip() == "passed"
