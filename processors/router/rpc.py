"""The router's own answer to a question it does not deliver (no relationship, no request/reply
for the target, a type the asker may not send): a REFUSED answer of the question's answer type,
with the reason, into the asking instance's replies partition, so the asker fails at once with
the reason instead of waiting for its deadline. Made only when the asker can take answers and
named a valid partition; like the reports, it never holds the round back."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from bus import naming
from bus.envelope import CORRELATION_ID, PARTITION_KEY, REPLY_PARTITION, TYPE
from bus.events import EVENT_TYPES
from bus.events.models import AnswerInfo, AnswerStatus, EventMeta
from bus.log import get_logger
from processors.router.outputs import DROPPABLE
from processors.router.reports import Reporter
from processors.router.table import RoutingTable

log = get_logger(__name__)
ROUTER = naming.ROUTER_SOURCE
TIMEOUT = 3.0

Refusal = tuple[str, bytes | None, Mapping[str, bytes], str]  # asker, key, headers, reason


def answer_type(question: str) -> str | None:
    found = question.removesuffix("Requested") + "Answered"
    return found if found in EVENT_TYPES else None


async def refuse_questions(reporter: Reporter, table: RoutingTable,
                           refusals: Sequence[Refusal], add: Callable[..., None],
                           partitions: Mapping[str, int]) -> None:
    """``reporter``: its serde encodes the answers, and its pause (after the registry failed
    to answer) holds for these too, so a hanging registry never holds the routing back."""
    now = datetime.now(UTC)
    serde = reporter.serde
    for asker, _key, headers, reason in refusals:
        if reporter.paused():
            return
        topic = naming.replies_topic(table.namespace, asker)
        box = table.boxes.get(asker)
        kind = answer_type(headers.get(TYPE, b"").decode("utf-8", "replace"))
        request_id = (headers.get(CORRELATION_ID) or b"").decode("utf-8", "replace")
        try:
            partition = int(headers.get(REPLY_PARTITION) or b"-1")
        except ValueError:
            partition = -1
        if (box is None or kind is None or not request_id or topic not in partitions
                or not 0 <= partition < partitions[topic]):
            continue  # nobody to tell, or nowhere to put it: the asker's deadline tells
        subject = (headers.get(PARTITION_KEY) or b"").decode("utf-8", "replace") or request_id
        model: type[Any] = EVENT_TYPES[kind]  # every answer type has meta and answer
        answer = model(
            meta=EventMeta(event_id=str(uuid.uuid4()), source_box=ROUTER, region=box.region,
                           aggregate_key=subject, occurred_at=now, target_box=asker,
                           correlation_id=request_id),
            answer=AnswerInfo(request_id=request_id, status=AnswerStatus.REFUSED,
                              error=f"the router did not deliver the question: {reason}"))
        try:
            async with asyncio.timeout(TIMEOUT):
                encoded = await serde.encode(answer, topic)
        except Exception as exc:
            reporter.pause()
            log.warning("the router's refusal of a question could not be made; the asker "
                        "waits for its deadline", asker=asker, request_id=request_id,
                        error=repr(exc))
            return
        add(topic, partition, 0, encoded.key, encoded.value, int(now.timestamp() * 1000),
            [*encoded.headers, (REPLY_PARTITION, str(partition).encode())], DROPPABLE, asker)
