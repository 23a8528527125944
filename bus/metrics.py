"""Prometheus metrics of boxbus services (``--metrics-port``): one registry per process, served
by prometheus_client from its own thread on loopback unless told otherwise. Each service feeds
its own counters and gauges from an asyncio task (see ``connectors/box/metrics.py`` and
``processors/router/metrics.py``)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, start_http_server

from bus.log import get_logger

log = get_logger(__name__)


class MetricsServer:
    """One registry per process, served on ``host:port`` (loopback unless told otherwise)."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.port = port
        self.host = host
        self.registry = CollectorRegistry()
        self._server: Any = None

    def start(self) -> None:
        self._server, _ = start_http_server(self.port, addr=self.host, registry=self.registry)
        self.port = self._server.server_port  # the real one when 0 was asked
        log.info("metrics served", url=f"http://{self.host}:{self.port}/metrics")

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


class Total:
    """A Counter fed from a service's running total (the service counts; we report)."""

    def __init__(self, counter: Counter) -> None:
        self.counter = counter
        self.seen = 0

    def update(self, total: int) -> None:
        if total > self.seen:
            self.counter.inc(total - self.seen)
            self.seen = total
