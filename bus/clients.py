"""Starting Kafka clients so that a failed start leaves nothing open.

aiokafka's ``start()`` raises when the brokers cannot be reached or refuse the login, and the
half-started client then warns at exit that it was never closed. ``start_or_close`` closes it
before the error goes up, so a command that cannot reach Kafka prints one error, not three.
"""

from __future__ import annotations

import contextlib
from typing import Any


async def start_or_close(client: Any) -> None:
    """``client.start()``; on failure ``stop()`` (producers, consumers) or ``close()`` (the
    admin client) first, then the error."""
    try:
        await client.start()
    except BaseException:
        close = client.stop if hasattr(client, "stop") else client.close
        with contextlib.suppress(Exception):
            await close()
        raise
