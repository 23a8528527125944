"""Every `boxbus` command meets a mistake with one readable error and a non-zero exit: a box, a
topic, a file or an event type that does not exist, and services that are not there (no stack
set up, or a stack whose services do not answer). Never a traceback, never aiokafka's own
log lines beside the error, never the last-resort "unexpected" message (a bug).

The table below must name every command of `boxbus --help`; a new command without a case
fails `test_every_command_has_a_case`.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer

from boxbus.cli.main import app
from bus.devstack import StackInfo
from tests.conftest import REPO, boxbus_cli

pytestmark = pytest.mark.stack

DEMO_TOPOLOGY = str(REPO / "deploy" / "topology" / "demo.yaml")
RULES_OK = str(REPO / "deploy" / "rules" / "fresh-farm.yaml")
RULES_OTHER_BOX = str(REPO / "tests" / "unit" / "rules" / "other-box.yaml")
RULES_MISTAKE = str(REPO / "tests" / "unit" / "rules" / "mistake.yaml")
NOWHERE = {  # services named, none answering: a stack that is down
    "BOXBUS_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
    "BOXBUS_SCHEMA_REGISTRY_URL": "http://127.0.0.1:1/apis/ccompat/v7",
    "BOXBUS_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/box",
}


class Situation:
    RUNNING = "the stack runs"  # the mistake is the input
    NO_STACK = "no stack is set up"
    UNREACHABLE = "the services named do not answer"


@dataclass(frozen=True)
class Case:
    argv: tuple[str, ...]
    situation: str
    says: str  # a piece of the message that says what was wrong
    env: tuple[tuple[str, str], ...] = ()

    @property
    def command(self) -> str:
        return " ".join(a for a in self.argv[:2] if not a.startswith("-"))

    @property
    def commands(self) -> set[str]:
        """The command this case runs, for a group two levels deep too (box rules apply)."""
        return {self.command, " ".join(a for a in self.argv[:3] if not a.startswith("-"))}


def case(line: str, situation: str, says: str, **env: str) -> Case:
    return Case(tuple(line.split()), situation, says, tuple(env.items()))


R, N, U = Situation.RUNNING, Situation.NO_STACK, Situation.UNREACHABLE
CASES = [
    # the local stack itself
    case("dev up --only nope", R, "--only takes"),
    case("dev status", N, "no local stack is set up"),
    case("dev kill-node 7", R, "no Kafka node 7"),
    case("dev kill-node 1", N, "no local stack is set up"),
    case("dev start-node 7", R, "no Kafka node 7"),
    case("dev createdb bad/name", R, "not a usable database name"),
    case("dev createdb somebox", N, "no database"),
    # the contract
    case("schemas list", R, "no .avsc files under /nope", BOXBUS_SCHEMAS_DIR="/nope"),
    case("schemas codegen --check", R, "no .avsc files", BOXBUS_SCHEMAS_DIR="/nope"),
    case("schemas release", R, "no .avsc files", BOXBUS_SCHEMAS_DIR="/nope"),
    case("schemas check --registry", N, "where the schema registry is"),
    case("schemas check --registry", U, "does not answer"),
    case("schemas register --topic nope.topic", R, "nope.topic do not exist"),
    case("schemas register --region north", N, "does not know where"),
    case("events publish nope.Type --example", R, "no event type 'nope.Type'"),
    case("events publish OrderPlaced --file /nope.json", R, "cannot read /nope.json"),
    case("events publish OrderPlaced --example --topic nope.topic", R,
         "topic nope.topic does not exist"),
    case("events publish OrderPlaced --example", N, "does not know where Kafka is"),
    case("events publish OrderPlaced --example", U, "Unable to bootstrap"),
    case("events tail nope.topic", R, "topic nope.topic does not exist"),
    case("events tail nope.topic", U, "Unable to bootstrap"),
    case("events verify nope.topic 0", R, "topic nope.topic does not exist"),
    case("events verify nope.topic 0", N, "does not know where Kafka is"),
    case("dlq list nope.topic", R, "topic nope.topic does not exist"),
    case("dlq list nope.topic", N, "does not know where Kafka is"),
    case("dlq show nope.topic 0", R, "topic nope.topic does not exist"),
    case("dlq show nope.topic 0", U, "Unable to bootstrap"),
    case("dlq replay nope.topic --all", R, "topic nope.topic does not exist"),
    case("dlq replay nope.topic --all", N, "does not know where"),
    # a box
    case("box migrate", R, "which database"),
    case("box migrate --box somebox", N, "does not know where box somebox's database is"),
    case("box migrate --box somebox", U, "does not answer"),
    case("box run --box nope", R, "keeps no Kafka credentials for box nope"),
    case("box credentials --box nope", R, "keeps no credentials for box nope"),
    case("box rotate-credentials --box nope", R, "has no Kafka user"),
    case("box rotate-credentials --box nope", N, "does not know where Kafka is"),
    case("box rotate-signing-key --box nope", R, "has no signing key"),
    case("asyncapi export --topology nope.yaml", R, "cannot read the topology file"),
    case("box rotate-signing-key --box nope --since yesterday", R, "is not a time"),
    case("box run --box nope", N, "does not know where Kafka is"),
    case("box run --box nope", U, "Unable to bootstrap"),
    case("box show --box nope", R, "box nope has no database"),
    case("box show --box nope", N, "does not know where box nope's database is"),
    case("box show --box nope", U, "does not answer"),
    case("box receipts --box nope", R, "box nope has no database"),
    case("box receipts --box nope --overdue-after soon", R, "is not a duration"),
    case("box receipts --box nope", U, "does not answer"),
    case("box documents --box nope", R, "box nope has no database"),
    case("box documents --box nope --get doc-1", R, "--get and --out go together"),
    case("box rules check nope.yaml", R, "cannot read the rules file"),
    case(f"box rules check {RULES_MISTAKE}", R, "outbound.share.NoSuchEvent"),
    case(f"box rules apply {RULES_MISTAKE} --box farm", R, "is not an event type"),
    case(f"box rules apply {RULES_OTHER_BOX} --box farm", R, "rules of box 'shop', not of"),
    case(f"box rules apply {RULES_OK} --box fresh-farm", R, "box fresh-farm has no database"),
    case("box rules show --box nope", R, "box nope has no database"),
    case("box rules show --box nope", U, "does not answer"),
    case("relay --box nope", R, "box nope has no database"),
    case("relay --box nope", U, "does not answer"),
    case("relay status --box nope", R, "box nope has no database"),
    case("relay status --box nope", N, "does not know where box nope's database is"),
    case("relay unpark --box nope", R, "box nope has no database"),
    case("relay unpark --box nope", U, "does not answer"),
    case("inbox run --box nope --handlers connectors.refbox.handlers", R,
         "box nope has no database"),
    case("inbox run --box nope --handlers nope.module", R, "cannot import handler module"),
    case("inbox run --box nope --handlers connectors.refbox.handlers", N,
         "does not know where"),
    # the network
    case(f"topology validate {'/nope.yaml'}", R, "cannot read the topology file /nope.yaml"),
    case("topology plan /nope.yaml", R, "cannot read the topology file"),
    case(f"topology plan {DEMO_TOPOLOGY}", N, "does not know where Kafka is"),
    case(f"topology apply {DEMO_TOPOLOGY}", U, "Unable to bootstrap"),
    case("topology apply /nope.yaml", R, "cannot read the topology file"),
    case("router run", R, "keeps no Kafka credentials for the router of network 'nonet'",
         BOXBUS_TOPIC_NAMESPACE="nonet"),
    case("router run", N, "does not know where Kafka is"),
    case("router run", U, "Unable to bootstrap"),
    case("aggregator run", R,
         "keeps no Kafka credentials for the aggregator of network 'nonet'",
         BOXBUS_TOPIC_NAMESPACE="nonet"),
    case("aggregator run", N, "does not know where Kafka is"),
    case("demo --topology /nope.yaml", R, "cannot read the topology file"),
    case("bench outbox --only nope", R, "unknown part(s) ['nope']"),
    case("bench outbox", N, "does not know where"),
    case("bench router --only nope", R, "unknown contender(s) ['nope']"),
    case("bench router", U, "Unable to bootstrap"),
    case("bench scale --boxes 10,many", R, "'10,many' is not a comma-separated list of box "
         "counts"),
    case("bench scale", N, "does not know where"),
    case("bench isolation", N, "does not know where Kafka is"),
    case("bench week --scale 0", R, "Invalid value for '--scale'"),
    case("bench week", N, "does not know where Kafka is"),
    case("analytics query salez", R, "no analytics query named 'salez'"),
    case("analytics query sales --by planet", R, "cannot group by planet"),
    case("analytics query sales", N, "no analytics database is given and no local stack"),
    case("analytics query sales", U, "cannot reach the analytics database"),
    case("analytics serve --port 70000", R, "Invalid value for '--port'"),
    case("analytics serve", N, "no analytics database is given and no local stack"),
    case("analytics serve", U, "cannot reach the analytics database"),
    case("mailer run --replies nowhere", R, "--replies 'nowhere' is not HOST:PORT"),
    case("mailer run --http 8025", R, "--http '8025' is not HOST:PORT"),
    case("mailer run", R, "keeps no Kafka credentials for the mailer of network 'nonet'",
         BOXBUS_TOPIC_NAMESPACE="nonet"),
    case("mailer run", N, "does not know where Kafka is"),
    case("mailer status", R, "the local stack has no mailer database 'nonet_mailer'",
         BOXBUS_TOPIC_NAMESPACE="nonet"),
    case("mailer status", N, "no mailer database is given and no local stack runs"),
    case("mailer status", U, "the mailer's database at 127.0.0.1:1/box does not answer"),
    case("bench mail", N, "does not know where"),
    case("bench rpc", N, "does not know where"),
    case("company run --box nope --system ledger --sales a --delivery b --billing c", R,
         "the systems are sales, delivery, billing"),
    case("company run --box nope --system sales --sales a --delivery b --billing c", N,
         "does not know where Kafka is"),
    case("bench rpc --rate 0", R, "Invalid value for '--rate'"),
    case("partner onboard farm --token t0k3n --region north", N, "does not know where Kafka"),
    case("partner onboard farm --token t0k3n --region north", R,
         "the local stack has no mailer database 'nonet_mailer'",
         BOXBUS_TOPIC_NAMESPACE="nonet"),
    case("partner replay farm", N, "does not know where Kafka"),
    case("campaign preview --box hq --template /nope.txt", R,
         "cannot read the template /nope.txt"),
    case("campaign send --box hq --template /nope.txt --name spring --spool /tmp/spool", R,
         "cannot read the template /nope.txt"),
    case("partner replay farm", R, "the local stack has no mailer database 'nonet_mailer'",
         BOXBUS_TOPIC_NAMESPACE="nonet"),
]

# Commands with no input to get wrong and no service to miss, and why that is right.
EXEMPT = {
    "dev fetch": "needs no stack and takes no input; its failures (no Maven, a failed "
                 "download) are tested in tests/unit/test_devstack_pieces.py",
    "dev down": "stopping a stack that is not running succeeds, as `docker compose down` does",
}


def _commands(group: object = None, path: tuple[str, ...] = ()) -> Iterator[str]:
    group = group or typer.main.get_command(app)
    for name, sub in group.commands.items():  # type: ignore[attr-defined]
        if hasattr(sub, "commands"):
            if sub.invoke_without_command:  # `boxbus relay --box X` runs the group itself
                yield " ".join((*path, name))
            yield from _commands(sub, (*path, name))
        else:
            yield " ".join((*path, name))


def test_every_command_has_a_case() -> None:
    covered = {name for c in CASES for name in c.commands} | set(EXEMPT)
    missing = sorted(set(_commands()) - covered)
    assert not missing, f"commands without a mistake case: {missing}"


def _environment(situation: str, run_dir: Path, stack_env: dict[str, str],
                 extra: tuple[tuple[str, str], ...]) -> dict[str, str]:
    bare = {k: v for k, v in os.environ.items() if not k.startswith("BOXBUS_")}
    if situation == Situation.RUNNING:
        env = dict(stack_env)
    elif situation == Situation.NO_STACK:
        env = {**bare, "BOXBUS_RUN_DIR": str(run_dir)}
    else:
        env = {**bare, "BOXBUS_RUN_DIR": str(run_dir), **NOWHERE}
    # Wide enough that no message is wrapped inside a word or a box.
    return {**env, "BOXBUS_LOG_LEVEL": "INFO", "COLUMNS": "300", **dict(extra)}


def _run(argv: tuple[str, ...], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*boxbus_cli(), *argv], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=90, check=False)


def test_every_mistake_gets_one_readable_error(
    stack: StackInfo, env_for_cli: dict[str, str], tmp_path: Path
) -> None:
    def attempt(c: Case) -> tuple[Case, subprocess.CompletedProcess[str]]:
        run_dir = tmp_path / f"nostack-{CASES.index(c)}"
        return c, _run(c.argv, _environment(c.situation, run_dir, env_for_cli, c.env), tmp_path)

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(attempt, CASES))
    wrong = []
    for c, result in results:
        out = result.stdout + result.stderr
        problems = [
            why for why, bad in [
                (f"exit {result.returncode}", result.returncode == 0),
                ("a traceback", "Traceback" in out),
                ("the bug message", "unexpected" in out and "this is a bug" in out),
                ("aiokafka's own log lines", "[aiokafka]" in out or "Unclosed" in out),
                (f"no {c.says!r}", c.says not in " ".join(out.split())),
                ("not one error", not (out.count("error:") == 1 or "Invalid value" in out)),
            ] if bad]
        if problems:
            wrong.append(f"`boxbus {' '.join(c.argv)}` ({c.situation}): "
                         f"{', '.join(problems)}\n{out[-1500:]}")
    assert not wrong, "\n\n".join(wrong)
