"""Topic and subject names. Everything boxbus names starts with the topic namespace."""

from __future__ import annotations

import re

from bus.errors import ConfigError

_REGION = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
DLQ_SUFFIX = ".dlq"


def check_region(region: str) -> str:
    if not _REGION.match(region):
        raise ConfigError(
            f"{region!r} is not a region name",
            hint="use lower-case letters, digits, '-' and '_' (north, south-east, centre)",
        )
    return region


def region_topic(namespace: str, region: str) -> str:
    """The topic of one region's events: ``<namespace>.region.<region>``."""
    return f"{namespace}.region.{check_region(region)}"


def region_of_topic(namespace: str, topic: str) -> str | None:
    """The region a region topic belongs to; None for any other topic."""
    prefix = f"{namespace}.region."
    if topic.startswith(prefix) and not topic.endswith(DLQ_SUFFIX):
        return topic[len(prefix):]
    return None


def dlq_topic(topic: str) -> str:
    """Where the bad records of ``topic`` go: one dead-letter topic per topic, so a region's
    bad input stays in that region (retention, access rights)."""
    return topic if topic.endswith(DLQ_SUFFIX) else topic + DLQ_SUFFIX


def source_of_dlq(topic: str) -> str:
    return topic[: -len(DLQ_SUFFIX)] if topic.endswith(DLQ_SUFFIX) else topic


def subject(topic: str, record_fullname: str) -> str:
    """Registry subject by TopicRecordNameStrategy: many event types share a region topic, and
    each type evolves on its own."""
    return f"{topic}-{record_fullname}"
