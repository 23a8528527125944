"""The network described as an AsyncAPI 3.0 document, for people and tools that do not read
Python: every channel (topic) with its Kafka binding, every event as a message whose payload is
its Avro schema (the registry's wire format, Confluent framing, subjects per
TopicRecordNameStrategy), the CloudEvents headers, and who sends and receives where.

Without a topology the document describes the contract: channels are address templates
(``{namespace}.region.{region}``). With one, each topic the topology makes is a channel of its
own, with its partitions, replication and configuration, and each box's operations name its
own ingress and inbox topics.
"""

from __future__ import annotations

import re
from typing import Any

from bus import naming
from bus.catalog import SchemaCatalog
from bus.deadletter import (
    CODE,
    FAILED_AT,
    GROUP,
    LETTER_ID,
    OFFSET,
    PARTITION,
    REASON,
    TIMESTAMP,
    TOPIC,
    VALUE_DROPPED,
)
from bus.envelope import (
    CAUSATION_ID,
    CONTENT_TYPE,
    CORRELATION_ID,
    DATASCHEMA,
    ID,
    PARTITION_KEY,
    REGION,
    SOURCE,
    SPECVERSION,
    TARGET_BOX,
    TIME,
    TYPE,
    Envelope,
)
from bus.events import EVENT_TYPES
from bus.signing import HEADER as SIGNATURE
from bus.topology.model import BoxKind, Topology
from bus.topology.plan import wanted_topics
from bus.tracing import TRACEPARENT, TRACESTATE

VERSION = "3.0.0"
BINDING = "0.5.0"
AVRO = "application/vnd.apache.avro;version=1.9.0"

_HEADERS = {
    SPECVERSION: "CloudEvents spec version (1.0)",
    ID: "event id; the inbox applies each id once",
    SOURCE: "/boxes/<source box>: the router checks it against the ingress topic's owner",
    TYPE: "the Avro full name of the event",
    TIME: "when it happened, RFC 3339 UTC",
    CONTENT_TYPE: "application/avro",
    REGION: "the source box's region",
    PARTITION_KEY: "the aggregate key, also the record key",
    DATASCHEMA: "the registry URL of the writer schema",
    TARGET_BOX: "the box it is meant for, if one",
    CORRELATION_ID: "the business process it belongs to",
    CAUSATION_ID: "the event that caused it",
    SIGNATURE: "DSSE envelope of the sender's Ed25519 signature (signed types)",
    TRACEPARENT: "W3C trace context of the stage that sent it (tracing on)",
    TRACESTATE: "W3C trace state (tracing on)",
}
_REQUIRED = [SPECVERSION, ID, SOURCE, TYPE, TIME, CONTENT_TYPE, REGION, PARTITION_KEY]
_LETTER_HEADERS = {REASON: "why", CODE: "why, as a code", TOPIC: "where the record was read",
                   PARTITION: "its partition", OFFSET: "its offset", TIMESTAMP: "its timestamp",
                   FAILED_AT: "when it was refused", GROUP: "who refused it",
                   LETTER_ID: "the same for every letter of one record refused by one group",
                   VALUE_DROPPED: "size of a value too large to keep here"}


def _key(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", text)


def _ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


def _message(fullname: str, catalog: SchemaCatalog) -> dict[str, Any]:
    model = EVENT_TYPES.get(fullname)
    doc = (model.__doc__ or "").strip() if model else ""
    return {
        "name": fullname.rsplit(".", 1)[-1],
        "title": fullname,
        "summary": " ".join(doc.split()) or fullname,
        "contentType": Envelope.MEDIA_TYPE,
        "headers": _ref("schemas", "CloudEventHeaders"),
        "payload": {"schemaFormat": AVRO, "schema": catalog[fullname].schema},
        "correlationId": {"location": f"$message.header#/{CORRELATION_ID}"},
        "bindings": {"kafka": {
            "key": {"type": "string", "description": "the aggregate key (ce_partitionkey)"},
            "schemaIdLocation": "payload",
            "schemaIdPayloadEncoding": "confluent",
            "schemaLookupStrategy": "TopicRecordNameStrategy",
            "bindingVersion": BINDING}},
    }


def _channel(address: str, messages: list[str], description: str,
             binding: dict[str, Any] | None = None,
             parameters: dict[str, Any] | None = None) -> dict[str, Any]:
    channel: dict[str, Any] = {
        "address": address, "description": description,
        "messages": {_key(m): _ref("messages", _key(m)) for m in messages}}
    if parameters:
        channel["parameters"] = parameters
    if binding is not None:
        channel["bindings"] = {"kafka": {**binding, "bindingVersion": BINDING}}
    return channel


def _topic_binding(name: str, partitions: int, replication: int | None,
                   configs: dict[str, str]) -> dict[str, Any]:
    binding: dict[str, Any] = {"topic": name, "partitions": partitions}
    if replication:
        binding["replicas"] = replication
    conf: dict[str, Any] = {}
    if "retention.ms" in configs:
        conf["retention.ms"] = int(configs["retention.ms"])
    if "max.message.bytes" in configs:
        conf["max.message.bytes"] = int(configs["max.message.bytes"])
    if "cleanup.policy" in configs:
        conf["cleanup.policy"] = configs["cleanup.policy"].split(",")
    if conf:
        binding["topicConfiguration"] = conf
    return binding


_DESCRIPTIONS = {
    "region": "every accepted event of the region, with a proven source (the router writes it)",
    "ingress": "what the box publishes; only the box writes it, only the router reads it",
    "inbox": "the events for the box; only the router writes it, only the box reads it",
    "mail": "events for partners without a box, sent by e-mail",
    "dead-letter": "records that are not valid events, with the reason",
    "quarantine": "events refused by the router (forged source, duplicate header, ...)",
    "control": "the network's topology, compacted (JSON records)",
    "requests": "questions to the box (request/reply); only the router writes it, the box's "
                "responders read it",
    "replies": "answers to the box's questions, one partition per asking instance; only the "
               "router writes it",
}


def document(catalog: SchemaCatalog, topology: Topology | None = None, *,
             namespace: str = "boxbus", bootstrap: str | None = None,
             registry_url: str | None = None, title: str = "boxbus network") -> dict[str, Any]:
    """The AsyncAPI 3.0 document of ``topology`` (or of the contract alone)."""
    events = sorted(e.fullname for e in catalog)
    messages: dict[str, Any] = {_key(e): _message(e, catalog) for e in events}
    messages["DeadLetter"] = {
        "name": "DeadLetter", "summary": "the refused record, whole, with why and where from",
        "headers": {"type": "object", "properties": {
            h: {"type": "string", "description": d} for h, d in _LETTER_HEADERS.items()}},
        "payload": {"type": "string", "format": "binary",
                    "description": "the original value, as it was read"}}
    messages["ControlRecord"] = {
        "name": "ControlRecord", "contentType": "application/json",
        "summary": "one entry of the topology, keyed by its identity; no value: removed",
        "payload": {"type": "object", "properties": {"format": {"type": "integer"}},
                    "required": ["format"]}}
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    namespace = (topology.namespace if topology else None) or namespace
    if topology is None:
        text = {"description": "the network's topic namespace"}
        templates = {
            "region": ("{namespace}.region.{region}", events),
            "ingress": ("{namespace}.box.{box}.outbox", events),
            "inbox": ("{namespace}.box.{box}.inbox", events),
            "mail": ("{namespace}.mail", events),
        }
        for role, (address, carried) in templates.items():
            params = {name: ({"description": f"a {name} of the network"}
                             if name != "namespace" else text)
                      for name in re.findall(r"{(\w+)}", address)}
            channels[role] = _channel(address, carried, _DESCRIPTIONS[role],
                                      parameters=params)
        operations["boxPublishes"] = {"action": "send", "channel": _ref_channel("ingress"),
                                      "summary": "a box's relay publishes its outbox"}
        operations["boxReceives"] = {"action": "receive", "channel": _ref_channel("inbox"),
                                     "summary": "a box's inbox applies each event once"}
        operations["routerKeeps"] = {"action": "send", "channel": _ref_channel("region"),
                                     "summary": "the router keeps accepted events"}
    else:
        publishes = {b.id: b.publishes for b in topology.boxes}
        for topic in wanted_topics(topology, namespace):
            if topic.role in ("dead-letter", "quarantine"):
                carried = ["DeadLetter"]
            elif topic.role == "control":
                carried = ["ControlRecord"]
            elif topic.role == "ingress":
                owner = naming.owner_of_ingress(namespace, topic.name) or ""
                carried = sorted(publishes.get(owner) or events)
            elif topic.role in ("requests", "replies"):
                suffix = "Requested" if topic.role == "requests" else "Answered"
                carried = [e for e in events if e.startswith("boxbus.rpc.")
                           and e.endswith(suffix)]
            else:
                carried = events
            channels[_key(topic.name)] = _channel(
                topic.name, carried, _DESCRIPTIONS[topic.role],
                _topic_binding(topic.name, topic.partitions, topic.replication, topic.configs))
        for box in topology.boxes:
            if box.kind is not BoxKind.BOX:
                continue
            ingress = _key(naming.ingress_topic(namespace, box.id))
            inbox = _key(naming.inbox_topic(namespace, box.id))
            operations[_key(f"{box.id}_publishes")] = {
                "action": "send", "channel": _ref_channel(ingress),
                "summary": f"box {box.id} ({box.company}) publishes its events"}
            operations[_key(f"{box.id}_receives")] = {
                "action": "receive", "channel": _ref_channel(inbox),
                "summary": f"box {box.id} applies the events for it"}
            if box.rpc:
                operations[_key(f"{box.id}_answers")] = {
                    "action": "receive",
                    "channel": _ref_channel(_key(naming.requests_topic(namespace, box.id))),
                    "summary": f"box {box.id} answers the questions asked of it"}
                operations[_key(f"{box.id}_hears")] = {
                    "action": "receive",
                    "channel": _ref_channel(_key(naming.replies_topic(namespace, box.id))),
                    "summary": f"box {box.id} takes the answers to its questions"}
        for region in topology.regions:
            kept = _key(naming.region_topic(namespace, region))
            operations[_key(f"router_keeps_{region}")] = {
                "action": "send", "channel": _ref_channel(kept),
                "summary": f"the router keeps region {region}'s accepted events"}
    doc: dict[str, Any] = {
        "asyncapi": VERSION,
        "info": {"title": title, "version": "1.0.0",
                 "description": f"Topics of the boxbus network {namespace!r}: Avro events with "
                                "CloudEvents headers (Kafka binary mode)."},
        "defaultContentType": Envelope.MEDIA_TYPE,
        "channels": channels,
        "operations": operations,
        "components": {
            "messages": messages,
            "schemas": {"CloudEventHeaders": {
                "type": "object", "required": _REQUIRED,
                "properties": {h: {"type": "string", "description": d}
                               for h, d in _HEADERS.items()}}},
            "securitySchemes": {"scram": {
                "type": "scramSha512",
                "description": "each box and service logs in as its own Kafka user"}},
        },
    }
    if bootstrap:
        server: dict[str, Any] = {
            "host": bootstrap.split(",")[0], "protocol": "kafka",
            "description": "the network's brokers",
            "security": [_ref("securitySchemes", "scram")]}
        if registry_url:
            server["bindings"] = {"kafka": {"schemaRegistryUrl": registry_url,
                                            "schemaRegistryVendor": "confluent",
                                            "bindingVersion": BINDING}}
        doc["servers"] = {"brokers": server}
    return doc


def _ref_channel(key: str) -> dict[str, str]:
    return {"$ref": f"#/channels/{key}"}
