"""Request/reply on the bus: a box asks a related box a question and awaits the answer until a
deadline.

Questions and answers are events of the contract (``boxbus.rpc.*Requested`` and
``*Answered``), so they are typed, signed where the network signs, and routed like any event:
the router delivers a question only to a related box that takes part in request/reply
(``rpc: true`` in the topology), into its requests topic, and refuses the rest with a REFUSED
answer that names the reason.

**Asking** (:class:`Requester`). Each asking instance owns one partition of its box's replies
topic: it claims it with a PostgreSQL advisory lock held for its lifetime (two instances never
share one, a restarted one takes a free one), assigns it to itself without a consumer group,
and positions itself at its end *before* its first question, so every answer to its questions
is read (an answer written before the reader listens is still after that position). A question
names the partition (header ``boxbus_reply_partition`` and ``request.reply_partition``); the
router puts the answer there, so it reaches exactly the instance that asked. A question with no
answer by its deadline fails with :class:`RequestTimedOut`; an answer that comes later, or to a
question this instance never asked (one of an earlier run), is dropped and counted (``late``).

**Answering** (:class:`Responder`). Answers are functions registered per question type, like
inbox handlers; the responder is the box SDK's inbox on the requests topic, in its own consumer
group (several instances share the questions). The answer is written to the box's outbox in the
same transaction as the question's offset, with an event id derived from the question's: a
responder that crashes mid-question is retried (by itself or another instance) and its
uncommitted answer never left, so a question is answered once, never twice with different
results. A question past its deadline is not answered at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from bus import naming
from bus.envelope import REPLY_PARTITION
from bus.errors import BoxbusError, ConfigError
from bus.events import EVENT_TYPES, EventBase
from bus.events.models import AnswerInfo, AnswerStatus, EventMeta, RequestInfo
from bus.kafka import KafkaAccess
from bus.log import get_logger
from bus.serde import EventSerde
from bus.settings import Settings
from bus.validation import check_record
from connectors.box.handlers import Applied, Handlers, Retry
from connectors.box.inbox import Inbox
from connectors.box.outbox import Outbox

log = get_logger(__name__)
A = TypeVar("A", bound=EventBase)
ROUTER = naming.ROUTER_SOURCE


class RequestFailed(BoxbusError):
    """The question was answered with REFUSED or FAILED (the answer's reason is the message),
    or could not be sent."""


class RequestTimedOut(RequestFailed):
    """No answer by the question's deadline."""

    retriable = True


def answer_type(question: type[EventBase]) -> type[EventBase]:
    name = question.TYPE.removesuffix("Requested") + "Answered"
    if not question.TYPE.startswith("boxbus.rpc.") or name not in EVENT_TYPES:
        raise ConfigError(f"{question.TYPE} is not a question of the contract",
                          hint="questions are the boxbus.rpc.*Requested types")
    return EVENT_TYPES[name]


@dataclass
class _Waiting:
    future: asyncio.Future[EventBase]
    target: str
    answer_type: str
    asked: float


@dataclass
class RequesterStats:
    asked: int = 0
    answered: int = 0
    timeouts: int = 0
    refused: int = 0
    late: int = 0  # answers after the deadline, or to questions of an earlier run
    # The latest round trips (bounded: a service asks for months).
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=100_000))


class Requester:
    """One asking instance of a box. ``outbox``: encodes (and signs) the questions as the box.
    ``dsn``: the box's database, where the instance claims its replies partition."""

    def __init__(self, settings: Settings, kafka: KafkaAccess, box_id: str, region: str,
                 serde: EventSerde, dsn: str, *, outbox: Outbox | None = None,
                 label: str | None = None) -> None:
        self.settings = settings
        self.kafka = kafka
        self.box_id = box_id
        self.region = region
        self.serde = serde
        self.dsn = dsn
        self.outbox = outbox or Outbox(settings, serde)
        self.label = label or f"{box_id}/{uuid.uuid4().hex[:6]}"
        self.topic = naming.replies_topic(settings.topic_namespace, box_id)
        self.partition: int | None = None
        self.stats = RequesterStats()
        self._waiting: dict[str, _Waiting] = {}
        self._lock_conn: asyncpg.Connection | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Requester:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Claim a replies partition, listen on it from its end, and get ready to ask."""
        self._consumer = self.kafka.consumer(enable_auto_commit=False, group_id=None,
                                             fetch_max_wait_ms=10, auto_offset_reset="latest")
        await self._consumer.start()
        try:
            partitions = sorted(self._consumer.partitions_for_topic(self.topic) or ())
            if not partitions:
                await self._consumer._client.force_metadata_update()
                partitions = sorted(self._consumer.partitions_for_topic(self.topic) or ())
            if not partitions:
                raise ConfigError(f"box {self.box_id} has no replies topic {self.topic}",
                                  hint="give the box rpc: true in the topology and apply it")
            self.partition = await self._claim(partitions)
            tp = TopicPartition(self.topic, self.partition)
            self._consumer.assign([tp])
            await self._consumer.seek_to_end(tp)
            await self._consumer.position(tp)  # resolved now, before the first question
            self._producer = self.kafka.producer(acks="all", linger_ms=0,
                                                 enable_idempotence=True)
            await self._producer.start()
        except BaseException:
            await self.stop()
            raise
        self._reader = asyncio.create_task(self._read(), name=f"replies-{self.label}")
        self._reader.add_done_callback(self._reader_ended)
        log.info("requester ready", box=self.box_id, requester=self.label,
                 replies=f"{self.topic}[{self.partition}]")

    def _reader_ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        error = task.exception()
        log.error("the requester stopped reading answers; its questions fail",
                  requester=self.label, error=repr(error))
        for waiting in self._waiting.values():
            if not waiting.future.done():
                waiting.future.set_exception(RequestFailed(
                    f"the requester {self.label} stopped reading answers: {error!r}"))

    async def _claim(self, partitions: list[int]) -> int:
        """A partition no other live instance of this box holds (a session advisory lock:
        it is freed when this instance's connection ends, however it ends)."""
        self._lock_conn = await asyncpg.connect(self.dsn)
        for partition in partitions:
            if await self._lock_conn.fetchval("SELECT pg_try_advisory_lock($1)",
                                              _lock_key(self.topic, partition)):
                return partition
        raise ConfigError(f"all {len(partitions)} partitions of {self.topic} are held by "
                          f"running instances of box {self.box_id}",
                          hint="give the topology more reply_partitions, or run fewer "
                          "asking instances")

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        for waiting in self._waiting.values():
            if not waiting.future.done():
                waiting.future.set_exception(RequestFailed(
                    f"the requester {self.label} stopped before the answer came"))
        for client in (self._producer, self._consumer):
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.stop()
        if self._lock_conn is not None:
            with contextlib.suppress(Exception):
                await self._lock_conn.close()

    async def ask(self, question: type[EventBase], target: str, *, timeout: float = 2.0,
                  key: str | None = None, **fields: Any) -> EventBase:
        """Ask ``target`` a question of type ``question`` with ``fields``; the answer (status
        OK or NOT_FOUND), or RequestFailed (REFUSED, FAILED), or RequestTimedOut after
        ``timeout`` seconds."""
        if self._producer is None or self.partition is None:
            raise RuntimeError("Requester.start() first")
        answers = answer_type(question)
        request_id = str(uuid.uuid4())
        started = time.perf_counter()
        now = datetime.now(UTC)
        make: Any = question  # every question type has meta and request
        event = make(
            meta=EventMeta(event_id=request_id, source_box=self.box_id, region=self.region,
                           aggregate_key=key or request_id, occurred_at=now,
                           target_box=target, correlation_id=request_id),
            request=RequestInfo(request_id=request_id, reply_partition=self.partition,
                                deadline=now + timedelta(seconds=timeout),
                                requester=self.label), **fields)
        (encoded,) = await self.outbox.encode(
            [event], headers=[(REPLY_PARTITION, str(self.partition).encode())])
        waiting = _Waiting(asyncio.get_running_loop().create_future(), target, answers.TYPE,
                           started)
        self._waiting[request_id] = waiting
        self.stats.asked += 1
        try:
            # The deadline covers sending too: brokers away fail the question in time.
            async with asyncio.timeout(timeout):
                try:
                    await self._producer.send_and_wait(encoded.topic, encoded.value,
                                                       key=encoded.key,
                                                       headers=encoded.headers)
                except KafkaError as exc:
                    raise RequestFailed(f"{question.TYPE.rsplit('.', 1)[-1]} {request_id} to "
                                        f"box {target} could not be sent: {exc!r}",
                                        hint="the brokers did not take it; ask again") from exc
                answer = await waiting.future
        except TimeoutError:
            self.stats.timeouts += 1
            raise RequestTimedOut(
                f"{question.TYPE.rsplit('.', 1)[-1]} {request_id} to box {target}: no answer "
                f"within {timeout:g} s",
                hint=f"is a responder of box {target} running (its system's service)?"
                ) from None
        finally:
            self._waiting.pop(request_id, None)
        self.stats.latencies_ms.append((time.perf_counter() - started) * 1000)
        return answer

    async def _read(self) -> None:
        assert self._consumer is not None
        while True:
            try:
                batches = await self._consumer.getmany(timeout_ms=500)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a broker away: the deadlines speak for the questions
                log.warning("reading answers failed; trying again", requester=self.label,
                            error=repr(exc))
                await asyncio.sleep(0.5)
                continue
            for records in batches.values():
                for record in records:
                    await self._take(record)

    async def _take(self, record: Any) -> None:
        try:
            checked = await check_record(record, self.serde, self.settings.topic_namespace)
        except Exception as exc:
            log.warning("an unreadable record among the answers is dropped",
                        requester=self.label, offset=record.offset, error=repr(exc))
            return
        answer, envelope = checked.event, checked.envelope
        info: AnswerInfo | None = getattr(answer, "answer", None)
        waiting = self._waiting.get(info.request_id) if info is not None else None
        if waiting is None or waiting.future.done():
            self.stats.late += 1
            log.info("late answer dropped", requester=self.label, type=envelope.type,
                     correlation_id=envelope.correlation_id, event_id=envelope.id)
            return
        if envelope.type != waiting.answer_type or envelope.source_box not in (
                waiting.target, ROUTER):
            log.warning("an answer from the wrong box or of the wrong type is dropped",
                        requester=self.label, source=envelope.source_box, type=envelope.type,
                        correlation_id=envelope.correlation_id)
            return
        assert info is not None
        if info.status in (AnswerStatus.REFUSED, AnswerStatus.FAILED):
            self.stats.refused += 1
            waiting.future.set_exception(RequestFailed(
                f"box {envelope.source_box} answered {info.status.value}: {info.error or ''}"
                .rstrip(": ")))
            return
        self.stats.answered += 1
        waiting.future.set_result(answer)


def _lock_key(topic: str, partition: int) -> int:
    digest = hashlib.sha256(f"{topic}:{partition}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


Answer = Callable[[Any, Applied], Awaitable[dict[str, Any]]]


class Answers:
    """What a box answers, per question type: ``@answers.to(ContractRatesRequested)`` on an
    async function ``(question, applied) -> dict`` of the answer's fields (its status OK), that
    may raise :class:`NotFound` or :class:`Refuse`. It runs in the responder's transaction
    (``applied.conn``), like an inbox handler."""

    def __init__(self) -> None:
        self.by_type: dict[str, tuple[type[EventBase], Answer]] = {}

    def to(self, question: type[EventBase]) -> Callable[[Answer], Answer]:
        answers = answer_type(question)

        def register(function: Answer) -> Answer:
            if question.TYPE in self.by_type:
                raise ValueError(f"an answer to {question.TYPE} is registered already")
            self.by_type[question.TYPE] = (answers, function)
            return function
        return register


class NotFound(BoxbusError):
    """Raised by an answer function: nothing is known about what was asked."""


class Refuse(BoxbusError):
    """Raised by an answer function: this box may not tell the asker."""


class Responder:
    """The answering side of a box: its inbox on its requests topic (consumer group
    ``<ns>.box.<id>.responders``), answering with ``answers``. The answers leave through the
    box's outbox (its relay publishes them)."""

    def __init__(self, settings: Settings, dsn: str, kafka: KafkaAccess, box_id: str,
                 region: str, answers: Answers, serde: EventSerde, *,
                 outbox: Outbox | None = None) -> None:
        self.box_id = box_id
        self.region = region
        self.answers = answers
        self.answered = 0
        self.expired = 0
        self.outbox = outbox or Outbox(settings, serde)
        ns = settings.topic_namespace
        handlers = Handlers()
        for kind in answers.by_type:
            handlers.by_type[kind] = self._answer
        self.inbox = Inbox(settings, dsn, kafka, box_id, handlers, serde,
                           topics=[naming.requests_topic(ns, box_id)],
                           group_id=f"{naming.box_prefix(ns, box_id)}responders",
                           outbox=self.outbox, fetch_max_wait_ms=5, max_records=100)

    async def run(self) -> None:
        await self.inbox.run()

    def stop(self) -> None:
        self.inbox.stop()

    async def _answer(self, question: Any, applied: Applied) -> None:
        info: RequestInfo = question.request
        envelope = applied.envelope
        if info.deadline < datetime.now(UTC):
            self.expired += 1
            log.info("question past its deadline not answered", box=self.box_id,
                     type=envelope.type, correlation_id=info.request_id,
                     event_id=envelope.id)
            return
        answers: Any  # every answer type has meta and answer
        answers, function = self.answers.by_type[envelope.type]
        status, error, fields = AnswerStatus.OK, None, {}
        try:
            # A savepoint: an answer function's SQL error leaves the question's transaction
            # usable for the FAILED answer.
            async with applied.conn.transaction():
                fields = await function(question, applied)
        except NotFound as exc:
            status, error = AnswerStatus.NOT_FOUND, exc.message
        except Refuse as exc:
            status, error = AnswerStatus.REFUSED, exc.message
        except Retry:
            raise  # a lock, a remote service: the inbox tries again (within the deadline)
        except asyncpg.PostgresError as exc:
            if exc.sqlstate in ("40001", "40P01"):  # a serialization failure, a deadlock
                raise Retry(f"the answer met a conflict: {exc.sqlstate}") from exc
            log.exception("an answer failed", box=self.box_id, type=envelope.type,
                          correlation_id=info.request_id, event_id=envelope.id)
            status, error = AnswerStatus.FAILED, ("the answering box could not answer (an "
                                                  "error on its side; its operators have the "
                                                  "details)")
        except Exception:
            log.exception("an answer failed", box=self.box_id, type=envelope.type,
                          correlation_id=info.request_id, event_id=envelope.id)
            status, error = AnswerStatus.FAILED, ("the answering box could not answer (an "
                                                  "error on its side; its operators have the "
                                                  "details)")
        answer = answers(
            meta=EventMeta(
                # Derived from the question: however often it is retried, one answer.
                event_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"answer:{envelope.id}")),
                source_box=self.box_id, region=self.region,
                aggregate_key=question.meta.aggregate_key,
                occurred_at=datetime.now(UTC), target_box=envelope.source_box,
                correlation_id=info.request_id, causation_id=envelope.id),
            answer=AnswerInfo(request_id=info.request_id, status=status, error=error),
            **fields)
        await self.outbox.publish(applied.conn, answer, headers=[
            (REPLY_PARTITION, str(info.reply_partition).encode())])
        self.answered += 1
