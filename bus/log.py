"""Structured logging with structlog: a console renderer for people, JSON for machines.

Call :func:`configure_logging` once at the entry point. Library code takes a logger from
:func:`get_logger` and binds context (``event_id``, ``correlation_id``, ``component``) instead of
formatting it into the message.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

from bus.settings import LogFormat


def configure_logging(fmt: LogFormat = LogFormat.CONSOLE, level: str = "INFO") -> None:
    """Route structlog and the standard library's logging through one renderer on stderr."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any
    if fmt is LogFormat.JSON:
        renderer = structlog.processors.JSONRenderer()
        shared.append(structlog.processors.format_exc_info)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(foreign_pre_chain=shared, processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer,
        ])
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiokafka logs every reconnect attempt at ERROR while a broker starts; keep it readable.
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, root.level))
    logging.getLogger("httpx").setLevel(max(logging.WARNING, root.level))
    # The registry client logs every 404 of a lookup (a new schema) at INFO.
    logging.getLogger("schema_registry").setLevel(max(logging.WARNING, root.level))


def get_logger(name: str, **context: Any) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger.bind(**context) if context else logger
