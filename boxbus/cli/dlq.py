"""``boxbus dlq``: inspect dead letters and replay the ones that are fixed."""

from __future__ import annotations

import asyncio
import base64
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table

from boxbus.cli.context import endpoints, kafka_access, serde_for, settings_from_env
from boxbus.cli.output import console, print_json
from bus import naming
from bus.deadletter import DeadLetter
from bus.envelope import format_time, header_text
from bus.errors import BadEvent, ConfigError
from bus.examples import load_event
from bus.kafka import KafkaAccess, start_or_close
from bus.producer import EventProducer
from bus.record import PlainRecord
from bus.settings import Settings
from bus.topics import TopicSpec, ensure_topics, list_topics, read_topic
from bus.validation import check_record

app = typer.Typer(help="Dead letters: list, show, replay.", no_args_is_help=True)

TopicArg = Annotated[str, typer.Argument(
    help="The topic whose dead letters to read (or its .dlq or .quarantine topic itself).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


async def _letters(settings: Settings, topic: str) -> list[DeadLetter]:
    """The letters of ``topic``; none when the topic exists but nothing was refused yet (its
    dead-letter topic is made with the first consumer); an error when neither exists."""
    kafka = kafka_access(settings)
    letters = naming.letters_topic(topic)
    topics = await list_topics(kafka)
    if letters not in topics:
        source = naming.source_of_letters(letters)
        if source in topics:
            return []
        raise ConfigError(f"topic {topic} does not exist (nor {letters})",
                          hint=_letter_topics_hint(settings.topic_namespace, topics))
    records = await read_topic(kafka, letters)
    return [DeadLetter.from_record(r) for r in records]


# The namespace of a topic boxbus named: what comes before its region, box or mail part.
_NAMESPACE = re.compile(r"^(.+?)\.(?:region|box)\.|^(.+?)\.mail\b")


def _letter_topics_hint(namespace: str, topics: set[str]) -> str:
    suffixes = (naming.DLQ_SUFFIX, naming.QUARANTINE_SUFFIX)
    every = sorted(t for t in topics if t.endswith(suffixes))
    ours = [t for t in every if t.startswith(f"{namespace}.")]
    if ours:
        return f"dead-letter and quarantine topics of namespace {namespace!r}: " + ", ".join(ours)
    spaces = sorted({m.group(1) or m.group(2) for t in every if (m := _NAMESPACE.match(t))})
    if spaces:
        return (f"namespace {namespace!r} has no dead-letter or quarantine topic; namespaces "
                f"that have: {', '.join(spaces)} (BOXBUS_TOPIC_NAMESPACE=NS lists theirs)")
    if every:
        return "the cluster's dead-letter and quarantine topics: " + ", ".join(every[:20])
    return "the cluster has no dead-letter or quarantine topic yet: nothing was refused"


def _summary(letter: DeadLetter) -> dict[str, Any]:
    return {"dlq_partition": letter.dlq_partition, "dlq_offset": letter.dlq_offset,
            "letter_id": letter.letter_id,
            "code": letter.code, "reason": letter.reason, "topic": letter.topic,
            "partition": letter.partition, "offset": letter.offset,
            "failed_at": letter.failed_at, "group": letter.group,
            "event_id": header_text(letter.headers, "ce_id"),
            "type": header_text(letter.headers, "ce_type")}


@app.command("list")
def list_(topic: TopicArg, json_out: JsonOpt = False) -> None:
    """Every dead letter of a topic: why, and where the record was."""
    settings = settings_from_env()
    letters = asyncio.run(_letters(settings, topic))
    if json_out:
        print_json([_summary(letter) for letter in letters])
        return
    table = Table(title=f"{len(letters)} dead letter(s) in {naming.letters_topic(topic)}",
                  title_justify="left", box=box.SIMPLE_HEAD)
    for column in ("dlq offset", "code", "from", "type", "reason"):
        table.add_column(column, overflow="fold")
    for letter in letters:
        s = _summary(letter)
        table.add_row(f"{letter.dlq_partition}@{letter.dlq_offset}", letter.code,
                      f"{letter.partition}@{letter.offset}", (s["type"] or "-").rsplit(".")[-1],
                      letter.reason)
    console.print(table)


def _find(letters: list[DeadLetter], offset: int, partition: int) -> DeadLetter:
    for letter in letters:
        if (letter.dlq_partition, letter.dlq_offset) == (partition, offset):
            return letter
    raise ConfigError(f"no dead letter at partition {partition} offset {offset}",
                      hint="`boxbus dlq list TOPIC` shows the offsets")


@app.command()
def show(
    topic: TopicArg,
    offset: Annotated[int, typer.Argument(help="Offset in the dead-letter topic.")],
    partition: Annotated[int, typer.Option(help="Partition of the dead-letter topic.")] = 0,
    json_out: JsonOpt = False,
) -> None:
    """One dead letter, whole: reason, original headers, key and bytes."""
    settings = settings_from_env()
    letter = _find(asyncio.run(_letters(settings, topic)), offset, partition)
    value = letter.value or b""
    if json_out:
        print_json({**_summary(letter),
                    "key": letter.key.decode(errors="replace") if letter.key else None,
                    "headers": {k: header_text(letter.headers, k) for k, _ in letter.headers},
                    "value_base64": base64.b64encode(value).decode(),
                    "value_bytes": len(value), "value_dropped_bytes": letter.value_dropped})
        return
    console.print(f"[bold]{letter.code}[/]: {letter.reason}", highlight=False)
    console.print(f"from {letter.topic} partition {letter.partition} offset {letter.offset}, "
                  f"refused {letter.failed_at} by group {letter.group}", highlight=False)
    console.print(f"key: {letter.key!r}", highlight=False)
    for name, _ in letter.headers:
        console.print(f"  {name}: {header_text(letter.headers, name)}", highlight=False)
    if letter.value_dropped is not None:
        console.print(f"value: {letter.value_dropped} bytes, too large to keep in the "
                      "dead-letter topic; it stays in the source topic until its retention "
                      "ends", highlight=False)
    else:
        console.print(f"value: {len(value)} bytes; first 64: {value[:64].hex(' ')}",
                      highlight=False)


@app.command()
def replay(
    topic: TopicArg,
    offset: Annotated[list[int] | None, typer.Option(
        help="Offset in the dead-letter topic to replay (repeatable).")] = None,
    partition: Annotated[int, typer.Option(help="Partition of the dead-letter topic.")] = 0,
    replay_all: Annotated[bool, typer.Option("--all", help="Replay every dead letter.")] = False,
    file: Annotated[Path | None, typer.Option(
        help="Publish this corrected event (JSON) in place of the one dead letter given.")
    ] = None,
    again: Annotated[bool, typer.Option(
        "--again", help="Replay letters that were replayed before too.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Send dead letters back to their topic once they are valid: the original record when the
    cause is gone (a schema registered, a consumer upgraded), or a corrected event (--file).
    Letters that are still invalid are reported and left where they are (exit status 1).
    Each replay is recorded (topic <letters>.replayed): a letter replayed before, or a second
    letter of the same refused record, is skipped unless --again."""
    settings = settings_from_env()
    if not replay_all and not offset:
        raise typer.BadParameter("say which: --offset N (repeatable) or --all")
    if file is not None and (replay_all or len(offset or []) != 1):
        raise typer.BadParameter("--file replaces exactly one dead letter: give one --offset")
    results = asyncio.run(_replay(settings, topic, offset or [], partition, replay_all, file,
                                  again))
    done = sum(r["replayed"] for r in results)
    skipped = sum(r.get("skipped", False) for r in results)
    if json_out:
        print_json(results)
        if done + skipped < len(results):
            raise typer.Exit(1)
        return
    for r in results:
        mark = ("[green]replayed[/]" if r["replayed"] else
                "[blue]skipped[/]" if r.get("skipped") else "[yellow]still invalid[/]")
        console.print(f"{mark} {r['dlq']} -> {r['note']}", highlight=False)
    console.print(f"{done} of {len(results)} replayed"
                  + (f", {skipped} replayed before (--again replays them)" if skipped else ""))
    if done + skipped < len(results):
        raise typer.Exit(1)


async def _replay(settings: Settings, topic: str, offsets: list[int], partition: int,
                  replay_all: bool, file: Path | None, again: bool = False
                  ) -> list[dict[str, Any]]:
    found = endpoints(settings)
    serde = serde_for(settings, found.registry_url)
    letters = await _letters(settings, topic)
    log = ReplayLog(found.kafka, naming.letters_topic(topic))
    replayed = await log.read()
    chosen = letters if replay_all else [_find(letters, o, partition) for o in offsets]
    results = []
    # A letter goes back only where the letters of this topic come from: its own header could
    # name any topic (whoever may write a dead-letter topic writes that header too), and a
    # replay runs as the operator, past the router's checks.
    home = naming.source_of_letters(naming.letters_topic(topic))
    async with EventProducer(settings, found.kafka, serde) as producer, log:
        for letter in chosen:
            where = f"{letter.dlq_partition}@{letter.dlq_offset}"
            if letter.topic != home:
                results.append({"dlq": where, "replayed": False, "note":
                                f"refused: it names {letter.topic} as its source, but the "
                                f"letters of {naming.letters_topic(topic)} come from {home}"})
                continue
            before = replayed.get(letter.letter_id)
            if before is not None and not again:
                results.append({"dlq": where, "replayed": False, "skipped": True, "note":
                                f"replayed before ({before.get('at')}, letter "
                                f"{before.get('dlq')} to {before.get('to')}); --again "
                                "replays it once more"})
                continue
            if file is not None:
                event_type = header_text(letter.headers, "ce_type") or ""
                if event_type not in serde.catalog:
                    raise ConfigError(f"dead letter {where} has no known ce_type "
                                      f"({event_type!r}) to read {file} as")
                try:
                    text = file.read_text()
                except OSError as exc:
                    raise ConfigError(f"cannot read {file}: {exc.strerror}") from exc
                event = load_event(event_type, text, origin=str(file))
                published = await producer.publish(event, letter.topic)
                to = f"{letter.topic}[{published.partition}]@{published.offset}"
                replayed[letter.letter_id] = await log.record(letter, where, to)
                results.append({"dlq": where, "replayed": True, "note": f"corrected event to {to}"})
                continue
            try:
                await check_record(PlainRecord(
                    letter.topic, letter.partition, letter.offset, letter.timestamp, letter.key,
                    letter.value, letter.headers), serde, settings.topic_namespace)
            except BadEvent as exc:
                results.append({"dlq": where, "replayed": False,
                                "note": f"{exc.code}: {exc.message}"})
                continue
            p, o = await producer.send_raw(letter.topic, letter.key, letter.value,
                                           letter.headers)
            replayed[letter.letter_id] = await log.record(letter, where,
                                                          f"{letter.topic}[{p}]@{o}")
            results.append({"dlq": where, "replayed": True,
                            "note": f"{letter.topic}[{p}]@{o}"})
    return results


class ReplayLog:
    """The letters of a topic replayed so far: a compacted topic keyed by letter id, made on
    the first replay; one producer for the whole run."""

    def __init__(self, kafka: KafkaAccess, letters_topic: str) -> None:
        self.kafka = kafka
        self.topic = naming.replays_topic(letters_topic)
        self._producer: Any = None

    async def __aenter__(self) -> ReplayLog:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._producer is not None:
            await self._producer.stop()

    async def read(self) -> dict[str, dict[str, Any]]:
        if self.topic not in await list_topics(self.kafka):
            return {}
        found: dict[str, dict[str, Any]] = {}
        for record in await read_topic(self.kafka, self.topic):
            if record.key is not None and record.value is not None:
                found[record.key.decode()] = json.loads(record.value)
        return found

    async def record(self, letter: DeadLetter, where: str, to: str) -> dict[str, Any]:
        if self._producer is None:
            await ensure_topics(self.kafka, [TopicSpec(self.topic, 1, configs={
                "cleanup.policy": "compact"})])
            producer = self.kafka.producer(acks="all", enable_idempotence=True)
            await start_or_close(producer, self.kafka)
            self._producer = producer
        entry = {"at": format_time(datetime.now(UTC)), "dlq": where, "to": to,
                 "event_id": header_text(letter.headers, "ce_id")}
        await self._producer.send_and_wait(self.topic, json.dumps(entry).encode(),
                                           key=letter.letter_id.encode())
        return entry


