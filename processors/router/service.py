"""The router: the trust boundary of the network. It consumes the ingress topic
(``<ns>.box.<id>.outbox``, which only that box may write) of every box the control topics
know, named one by one (no pattern: the brokers are asked about these topics only), proves each
event's source, and is the only writer of the region topics and the inboxes.

One round:

1. take up to about ``max_records`` records from the assigned ingress partitions (up to four
   times that when many boxes are busy), split fairly between the boxes that have some
   waiting (:mod:`processors.router.fairness`: one box's backlog never holds back another
   box's events for more than a round);
2. for each, read the envelope headers (never the Avro body) and ask the routing table
   (:mod:`processors.router.table`), given the topic's owner, for the decision: an event that
   claims another source or region than its owner's is quarantined as ``forged-source``;
3. append the unchanged key, value, timestamp and headers to a batch per output partition: the
   owner's region topic (so everything there has a proven source), the recipient's inbox
   topic, or the mail topic for a partner (with ``boxbus_recipient``), keyed by the aggregate
   key; a quarantined record goes whole to ``<ingress topic>.quarantine`` with the reason, a
   record without a readable envelope to ``<ingress topic>.dlq``;
4. send the batches and wait until the brokers acknowledged every one (acks=all, idempotent);
5. only then commit the input offsets of the round.

A crash between 4 and 5 forwards the round again when the partitions are picked up: a recipient
may see an event twice, and its inbox drops the copy by event id. Nothing is lost: an offset is
never committed before its outputs are durable.

A round whose outputs cannot all be delivered is not committed: its records go back in front of
their partitions' buffers and are routed again after a pause that grows. From the third failure
in a row the round goes carefully, one output at a time: a delivery the brokers refuse for good
(a record too large for that box's inbox, a write the box's topic refuses) is quarantined as
``undeliverable`` with the brokers' answer, so one broken inbox does not hold back the other
boxes' events; the producer is then replaced (an idempotent producer's sequence does not survive
a refused batch). Retriable errors (a broker away, a topic that vanished) keep the round
waiting: after ``send_timeout`` seconds without all acks it is read again.

Scaling: instances share one consumer group (``<namespace>.router``) and split the ingress
partitions. A rebalance waits for the round in flight to finish and commit
(``on_partitions_revoked`` takes the round's lock), so a joining or leaving instance hands over
clean positions. The routing table follows the control topics (:mod:`processors.router.control`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any
from zlib import crc32

from aiokafka import AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import (
    CommitFailedError,
    IllegalStateError,
    KafkaError,
    KafkaTimeoutError,
    TopicAuthorizationFailedError,
)
from aiokafka.structs import OffsetAndMetadata

from bus import heap, naming, tracing
from bus.deadletter import DLQ_MAX_BYTES, DeadLetter
from bus.envelope import (
    CORRELATION_ID,
    ID,
    RECIPIENT,
    REPLY_PARTITION,
    SOURCE,
    TRACK,
    TYPE,
    format_time,
    header_text,
)
from bus.kafka import KafkaAccess, LoginWatch, start_or_close
from bus.log import get_logger
from bus.pipeline import unexpected
from bus.record import KafkaRecord
from bus.serde import EventSerde
from bus.settings import Settings
from processors.router.control import ControlFollower
from processors.router.fairness import FairIntake
from processors.router.outputs import Outputs, key_hash
from processors.router.reports import Reporter, Reports
from processors.router.rpc import refuse_questions
from processors.router.table import QUESTIONS, RoutingTable

QUESTION_TYPES = frozenset(t.encode() for t in QUESTIONS)

log = get_logger(__name__)
CAREFUL_AFTER = 3  # failed rounds in a row before outputs go one by one

@dataclass
class RouterStats:
    consumed: int = 0
    forwarded: int = 0  # output records to boxes (one event to three boxes: three)
    kept: int = 0  # accepted events copied to their region topic
    quarantined: int = 0
    dead_lettered: int = 0
    echoes_dropped: int = 0
    rounds: int = 0
    commit_failures: int = 0
    failed_rounds: int = 0  # a send failed: read again after a pause

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class _HandOver(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, router: Router) -> None:
        self.router = router

    async def on_partitions_revoked(self, revoked: Any) -> None:
        async with self.router._lock:  # the round in flight finishes and commits first
            self.router._intake.forget(revoked)
            log.info("router partitions revoked", partitions=len(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        log.info("router partitions assigned", partitions=len(assigned))


class Router:
    def __init__(self, settings: Settings, kafka: KafkaAccess, *, namespace: str | None = None,
                 group_id: str | None = None, max_records: int = 5000,
                 client_id: str = "boxbus-router", send_timeout: float = 60.0,
                 login_check_every: float = 30.0, serde: EventSerde | None = None) -> None:
        self.settings = settings
        # With a serde, the router reports to each box where its tracked events went
        # (EventsRouted into the box's inbox, in the same round), for its business receipts.
        self.reporter = Reporter(serde) if serde is not None else None
        self.kafka = kafka
        self.namespace = namespace or settings.topic_namespace
        self.group_id = group_id or f"{self.namespace}.router"
        self.max_records = max_records
        self.client_id = client_id
        self.stats = RouterStats()
        self.control = ControlFollower(kafka, self.namespace)
        self._lock = asyncio.Lock()
        self._partitions: dict[str, int] = {}
        self._known_for: RoutingTable | None = None
        self._known_inputs: set[str] = set()
        self._known_until = 0.0
        self._subscribed: set[str] = set()
        self._subscribed_for: RoutingTable | None = None
        self._refused: set[str] = set()  # topics the brokers refused, left until it changes
        self._started = False
        self._failing = 0  # rounds failed in a row (the pause before the next grows)
        self.login_check_every = login_check_every  # quiet seconds before asking the brokers
        self.send_timeout = send_timeout  # a round's outputs not acknowledged by then: retry
        self.first_fetch_at: float | None = None  # perf_counter of the first records fetched

    @property
    def table(self) -> RoutingTable:
        return self.control.table

    @property
    def subscribed_topics(self) -> frozenset[str]:
        """The ingress topics the router reads now."""
        return frozenset(self._subscribed)

    async def start(self) -> None:
        # Kafka clients belong to the running event loop: made here, not in __init__.
        self._producer = self._make_producer()
        self._consumer = self.kafka.consumer(
            group_id=self.group_id, client_id=self.client_id,
            enable_auto_commit=False, auto_offset_reset="earliest",
            max_partition_fetch_bytes=4 * 1024 * 1024, fetch_max_bytes=32 * 1024 * 1024,
            metadata_max_age_ms=30_000)
        self._intake = FairIntake(self._consumer, self.max_records)
        self._login = LoginWatch(self.kafka, self.login_check_every)
        try:
            await self.control.start()
            await start_or_close(self._producer, self.kafka)
            self._follow_the_network()
            await start_or_close(self._consumer, self.kafka)
        except BaseException:
            # Brokers unreachable, a refused login: close what was opened, then say why.
            for close in (self._consumer.stop, self._producer.stop, self.control.stop):
                with contextlib.suppress(Exception):
                    await close()
            raise
        self._started = True
        # Everything allocated so far (modules, settings, the table) lives as long as the
        # process: keep it out of the cyclic collector's scans, which the hot path's many
        # short-lived tuples would otherwise trigger over the whole heap (bus.heap).
        heap.settle()
        log.info("router started", group=self.group_id, namespace=self.namespace,
                 **self.table.describe())

    def _follow_the_network(self, *, again: bool = False) -> None:
        """Subscribe to the ingress topics of the boxes the control topics know, again when
        they change: named topics, not a pattern, so the consumer asks the brokers about these
        topics only, however many others the cluster holds. A topic named like an ingress
        topic whose owner is not in the network is not read at all."""
        table = self.table
        if table is self._subscribed_for and not again:
            return
        if table is not self._subscribed_for:
            self._refused.clear()  # the network changed: every box's topic is tried again
        self._subscribed_for = table
        wanted = {naming.ingress_topic(self.namespace, box.id)
                  for box in table.boxes.values()} - self._refused
        if wanted == self._subscribed:
            return
        if wanted:
            self._consumer.subscribe(topics=sorted(wanted), listener=_HandOver(self))
        else:  # no box (yet, or any more): nothing to read
            self._consumer.unsubscribe()
        log.info("router follows the ingress topics", topics=len(wanted),
                 added=sorted(wanted - self._subscribed)[:20],
                 removed=sorted(self._subscribed - wanted)[:20])
        self._subscribed = wanted

    def _make_producer(self) -> AIOKafkaProducer:
        return self.kafka.producer(
            acks="all", enable_idempotence=True, max_batch_size=512 * 1024,
            max_request_size=DLQ_MAX_BYTES, client_id=self.client_id)

    async def _new_producer(self) -> None:
        old, self._producer = self._producer, self._make_producer()
        await self._producer.start()
        with contextlib.suppress(Exception):
            await old.stop()
        self._known_for = None  # the new producer learns the output topics again

    async def _renewed_producer(self) -> AIOKafkaProducer:
        await self._new_producer()
        return self._producer

    async def stop(self) -> None:
        if self._started:
            async with self._lock:  # a round in flight finishes and commits first ...
                pass
            # ... but the lock is not held while leaving: a rebalance under way waits for it.
            await self._consumer.stop()
            await self._producer.stop()
            self._started = False
        await self.control.stop()

    async def run(self, stop: asyncio.Event, progress_every: float = 10.0) -> RouterStats:
        """Route until ``stop`` is set; the round in flight finishes and commits first."""
        await self.start()
        last = time.monotonic()
        try:
            # A refused login (a rotated password) ends the router with KafkaAccessDenied
            # rather than a wait without end (LoginWatch); a round it interrupts is not
            # committed, and is routed again by whoever takes the partitions.
            async with self._login.running():
                while not stop.is_set():
                    async with self._login.guard():
                        await self.round(timeout_ms=200)
                    if time.monotonic() - last >= progress_every:
                        last = time.monotonic()
                        log.info("router progress", **self.stats.as_dict())
        finally:
            await self.stop()
        return self.stats

    async def round(self, timeout_ms: int = 200) -> int:
        """One fetch, route, send, commit; the number of input records it handled."""
        self._follow_the_network()  # a box joined or left (the control topics changed)
        if not self._subscribed:
            # No box to read (yet): aiokafka's getmany would wait for an assignment that never
            # comes, and the next change of the network would go unseen.
            await asyncio.sleep(timeout_ms / 1000)
            return 0
        try:
            async with asyncio.timeout(timeout_ms / 1000 + 5):
                # (A consumer refused its login may wait in getmany for an assignment that
                # never comes: given up, then the login is checked below.)
                fetched = await self._intake.take(timeout_ms)
        except TimeoutError:
            fetched = {}
        except TopicAuthorizationFailedError as exc:
            # A box is leaving the network: its ingress ACL went before its control record.
            # Its topic is left out of the subscription until the network changes, so the
            # other boxes' partitions do not wait on it.
            refused = _topics_of(exc)
            log.warning("the router may no longer read these topics; it leaves them until "
                        "the network changes", topics=sorted(refused), error=repr(exc))
            self._refused |= refused
            self._follow_the_network(again=True)
            return 0
        if not fetched:
            return 0
        self._login.records_arrived()
        if self.first_fetch_at is None:
            self.first_fetch_at = time.perf_counter()
        async with self._lock:
            assigned = self._consumer.assignment()
            fetched = {tp: rs for tp, rs in fetched.items() if tp in assigned}
            try:
                async with asyncio.timeout(self.send_timeout):
                    handled = await self._route(fetched,
                                                careful=self._failing >= CAREFUL_AFTER)
            except (KafkaError, TimeoutError) as exc:
                # Some outputs may be written, none is committed: the round is read again
                # (the inboxes drop the copies). The partitions wait, nothing is skipped.
                self.stats.failed_rounds += 1
                self._failing += 1
                log.error("router could not deliver a round; routing it again",
                          error=repr(exc), failing_rounds=self._failing)
                if not getattr(exc, "retriable", True):
                    # An idempotent producer's sequence is broken after a refused batch: the
                    # partition's next batches would be refused as out of order.
                    await self._new_producer()
                self._intake.give_back(fetched)  # first in the next round, in order
                await asyncio.sleep(min(0.25 * 2 ** min(self._failing, 6), 10.0))
                return 0
            self._failing = 0
            offsets = {tp: OffsetAndMetadata(records[-1].offset + 1, "")
                       for tp, records in fetched.items() if records}
            try:
                await self._consumer.commit(offsets)
            except (CommitFailedError, IllegalStateError) as exc:
                # The group moved on (a rebalance): the new owner routes these again and the
                # inboxes drop the copies.
                self.stats.commit_failures += 1
                log.warning("router commit refused after a rebalance", error=str(exc))
            self.stats.rounds += 1
            return handled

    async def _route(self, fetched: dict[TopicPartition, list[KafkaRecord]], careful: bool = False
                     ) -> int:
        table = self.table
        await self._know(table, fetched)
        outputs = Outputs(self._producer, self._partitions, careful, self._renewed_producer)
        partitions, add, decide = self._partitions, outputs.add, table.decide
        handled = forwarded = echoes = regioned = 0
        traced, spans = tracing.enabled(), []
        reports = (Reports(self.namespace, table)
                   if self.reporter is not None and not self.reporter.paused() else None)
        refusals: list[tuple[str, bytes | None, dict[str, bytes], str]] = []
        for tp, records in fetched.items():
            owner = naming.owner_of_ingress(self.namespace, tp.topic) or ""
            for record in records:
                headers = list(record.headers)  # the batch builder takes lists only
                found = dict(headers)
                report = (reports.about(owner, record, found)
                          if reports is not None and TRACK in found else None)
                if len(found) != len(headers) and _repeats_envelope(headers):
                    # Readers differ on which copy counts (the first, the last): a record
                    # that carries two sources or two types is refused, not guessed at.
                    self._quarantine(outputs, record, "duplicate-header", "an envelope "
                                     "header (ce_*) appears more than once")
                    if report is not None:
                        report.refused("duplicate-header", "an envelope header (ce_*) "
                                       "appears more than once")
                    continue
                try:
                    decision = decide(found, owner)
                except Exception as exc:  # the pipeline's policy: never stop the partition
                    log.exception("unexpected error while routing a record; dead-lettering "
                                  "it", topic=record.topic, partition=record.partition,
                                  offset=record.offset)
                    problem = unexpected(exc)
                    self._dead_letter(outputs, record, problem.message, problem.code)
                    if report is not None:
                        report.refused(problem.code, "the router could not route it (an "
                                       "error on its side; its operators have the details)")
                    continue
                if decision.invalid:
                    self._dead_letter(outputs, record, decision.reason or "")
                    if report is not None:
                        report.refused("invalid-envelope", decision.reason or "")
                    continue
                if decision.quarantine is not None:
                    self._quarantine(outputs, record, decision.quarantine, decision.reason or "")
                    if report is not None:
                        report.refused(decision.quarantine, decision.reason or "")
                    if found.get(TYPE) in QUESTION_TYPES:  # bytes: nothing to decode
                        refusals.append((owner, record.key, found, decision.reason or ""))
                    continue
                if traced:  # the router's span becomes the event's context downstream
                    span = tracing.start("boxbus.router", tracing.CONSUMER, headers,
                                         **{"boxbus.source": owner,
                                            "boxbus.event_id": found.get(ID, b"").decode()})
                    spans.append(span)
                    headers = tracing.with_span(headers, span)
                if decision.echoes:
                    echoes += len(decision.echoes)
                    log.debug("echo dropped", event_id=header_text(headers, ID),
                              boxes=decision.echoes,
                              correlation_id=header_text(headers, CORRELATION_ID))
                key = record.key
                hashed = crc32(key) if key is not None else None
                kept = decision.region_topic
                if kept is not None:
                    if kept not in partitions:
                        reason = (f"region topic {kept} does not exist (run boxbus topology "
                                  "apply)")
                        self._quarantine(outputs, record, "missing-recipient-topic", reason)
                        if report is not None:
                            report.refused("missing-recipient-topic", reason)
                        continue
                    add(kept, hashed, tp.partition, key, record.value, record.timestamp,
                        headers, record, f"region topic {kept}")
                    regioned += 1
                if decision.recipients:
                    for recipient in decision.recipients:
                        if recipient.topic not in partitions:
                            reason = (f"topic {recipient.topic} of box {recipient.box!r} does "
                                      "not exist (run boxbus topology apply)")
                            self._quarantine(outputs, record, "missing-recipient-topic", reason)
                            if report is not None:
                                report.undelivered(recipient.box, "missing-recipient-topic",
                                                   reason)
                            continue
                        chosen = hashed
                        if recipient.reply:  # an answer: to the asking instance's partition
                            chosen = _reply_partition(found, partitions[recipient.topic])
                            if chosen is None:
                                self._quarantine(outputs, record, "bad-reply-partition",
                                                 f"an answer needs a {REPLY_PARTITION} "
                                                 f"header below {partitions[recipient.topic]}")
                                continue
                        add(recipient.topic, chosen, tp.partition, key, record.value,
                            record.timestamp, headers if not recipient.partner
                            else [*headers, (RECIPIENT, recipient.box.encode())],
                            record, recipient.box)
                        forwarded += 1
                        if report is not None:
                            report.delivered(recipient.box, recipient.partner)
            handled += len(records)
        if refusals and self.reporter is not None:
            await refuse_questions(self.reporter, table, refusals, add, partitions)
        try:
            refused = await outputs.send()
        except BaseException as exc:
            tracing.end(spans, exc)  # the round is routed again, with spans of its own
            raise
        tracing.end(spans)
        if refused:  # careful round: what the brokers refused for good waits in quarantine
            quarantine = Outputs(self._producer, self._partitions)
            for record, box, error in refused:
                reason = f"the brokers refused the delivery to box {box!r}: {error!r}"
                self._quarantine(quarantine, record, "undeliverable", reason)
                report = reports.of(record) if reports is not None else None
                if report is not None:
                    report.undelivered(box, "undeliverable", f"the brokers refused the "
                                       f"delivery to box {box!r} (too large for its inbox?)")
            await quarantine.send()
            forwarded -= len(refused)
        if reports and self.reporter is not None:
            # After the deliveries were acknowledged, before the round commits.
            written = Outputs(self._producer, self._partitions, careful,
                              self._renewed_producer)
            await self.reporter.write(reports, written.add, self._partitions)
            await written.send()
        self.stats.consumed += handled
        self.stats.forwarded += forwarded
        self.stats.kept += regioned
        self.stats.echoes_dropped += echoes
        return handled

    async def _know(self, table: RoutingTable, fetched: dict[TopicPartition, list[KafkaRecord]]
                    ) -> None:
        """Partition counts of every output topic this round may use (the ingress topics'
        quarantine and dead-letter topics included: ``topology apply`` makes them, the router
        may not create topics). Asks the brokers about these topics only, and only when the
        table or the set of ingress topics changed (a cluster's full metadata can be large)."""
        subscribed = self._consumer.subscription()
        inputs = {tp.topic for tp in fetched} | subscribed
        if (table is self._known_for and inputs <= self._known_inputs
                and time.monotonic() < self._known_until):
            return
        inputs |= self._known_inputs & subscribed  # a box that left is forgotten
        wanted = set(table.recipient_topics())
        for topic in inputs:
            wanted |= {naming.quarantine_topic(topic), naming.dlq_topic(topic)}
        client = self._producer.client
        await client.set_topics(sorted(wanted))  # one metadata request for all of them
        self._partitions.clear()  # the same dict the routing loop reads
        self._partitions.update({t: len(client.cluster.partitions_for_topic(t) or ())
                                 for t in wanted if client.cluster.partitions_for_topic(t)})
        for topic in inputs:
            for own in (naming.quarantine_topic(topic), naming.dlq_topic(topic)):
                if own not in self._partitions:
                    # The round waits (a topology apply makes it, or it shows up a moment
                    # after one).
                    raise KafkaTimeoutError(f"{own} is not visible yet")
        self._known_for, self._known_inputs = table, inputs
        # Partition counts are read again from time to time (an inbox may grow), and soon when
        # an inbox topic is missing (it may show up a moment after a topology apply).
        missing_inbox = any(t not in self._partitions for t in table.recipient_topics())
        self._known_until = time.monotonic() + (5.0 if missing_inbox else 30.0)

    def _quarantine(self, outputs: Outputs, record: KafkaRecord, code: str, reason: str) -> None:
        _, key, value, headers = _letter(record, code, reason, self.group_id)
        outputs.add(naming.quarantine_topic(record.topic), key_hash(key),
                          record.partition, key, value, record.timestamp,
                          [*headers, ("quarantine_code", code.encode()),
                           ("quarantine_reason", reason.encode())])
        self.stats.quarantined += 1
        log.warning("event quarantined", code=code, reason=reason, topic=record.topic,
                    partition=record.partition, offset=record.offset,
                    event_id=header_text(record.headers, ID),
                    correlation_id=header_text(record.headers, CORRELATION_ID),
                    source=header_text(record.headers, SOURCE))

    def _dead_letter(self, outputs: Outputs, record: KafkaRecord, reason: str,
                     code: str = "invalid-envelope") -> None:
        topic, key, value, headers = _letter(record, code, reason, self.group_id)
        outputs.add(topic, key_hash(key), record.partition, key, value, record.timestamp, headers)
        self.stats.dead_lettered += 1
        log.warning("event dead-lettered", code=code, reason=reason,
                    topic=record.topic, partition=record.partition, offset=record.offset)


def _topics_of(error: TopicAuthorizationFailedError) -> set[str]:
    """The topics an authorization error names (aiokafka gives one name or a set of them)."""
    named = error.args[0] if error.args else ()
    return {named} if isinstance(named, str) else {str(t) for t in named}


def _repeats_envelope(headers: list[tuple[str, bytes]]) -> bool:
    names = [name for name, _ in headers if name.startswith("ce_")]
    return len(names) != len(set(names))


def _letter(record: KafkaRecord, code: str, reason: str, group: str
            ) -> tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]]]:
    """The record as a dead letter (the same dlq_* headers, so `boxbus dlq` tools read it)."""
    letter = DeadLetter(
        topic=record.topic, partition=record.partition, offset=record.offset,
        timestamp=record.timestamp, key=record.key, value=record.value,
        headers=list(record.headers or ()), code=code, reason=reason,
        failed_at=format_time(datetime.now(UTC)), group=group)
    return letter.to_record()


def _reply_partition(headers: dict[str, bytes], partitions: int) -> int | None:
    """The replies partition an answer names, when it is one of the topic's."""
    raw = headers.get(REPLY_PARTITION)
    try:
        value = int(raw) if raw else -1
    except ValueError:
        return None
    return value if 0 <= value < partitions else None
