"""A faust-streaming app for the suite: one agent that forwards each record, upper-cased, from a
source topic to a sink topic. Run as a worker subprocess, configured by environment variables,
to prove faust works against the embedded Kafka broker."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import faust

from processors.peers.contract import librdkafka_login

# The suite's login (BOXBUS_KAFKA_*), as the benchmark's faust peer takes it.
LOGIN = librdkafka_login(os.environ.get("FORWARDER_BOOTSTRAP", "127.0.0.1:9092"))
app = faust.App(
    os.environ.get("FORWARDER_APP_ID", "boxbus-forwarder"),
    broker=f"kafka://{LOGIN['bootstrap.servers']}",
    broker_credentials=faust.SASLCredentials(
        username=LOGIN["sasl.username"], password=LOGIN["sasl.password"],
        mechanism=LOGIN["sasl.mechanism"]) if "sasl.username" in LOGIN else None,
    store="memory://",
    web_enabled=False,
    topic_replication_factor=1,
    topic_partitions=3,
    consumer_auto_offset_reset="earliest",
)
source = app.topic(os.environ.get("FORWARDER_SOURCE", "forwarder.in"),
                   key_type=bytes, value_type=bytes, value_serializer="raw", key_serializer="raw")
sink = app.topic(os.environ.get("FORWARDER_SINK", "forwarder.out"),
                 key_type=bytes, value_type=bytes, value_serializer="raw", key_serializer="raw")


@app.agent(source)
async def forward(stream: Any) -> AsyncIterator[None]:
    async for event in stream.events():
        await sink.send(key=event.key, value=event.value.upper())
        yield None
