"""Signed business documents: non-repudiation between companies, which no broker gives.

The sending box signs an event of a signed type (orders, confirmations, invoices, payments,
documents) with its Ed25519 key; the recipient verifies it before applying it, with the public
keys the network publishes in its control topic ``<ns>.control.keys``; an auditor checks any
record later (``boxbus events verify``).

In the spirit of the CloudEvents verifiability extension: one header, ``ce_dssematerial``,
holds a DSSE envelope without its payload (JSON, base64): ``payloadType`` and
``signatures: [{keyid, sig}]``. The payload is rebuilt from the record itself: the CloudEvents
core attributes (id, source, specversion, type, datacontenttype, dataschema, subject, time) and
the SHA-256 of the exact data bytes, as canonical JSON; the signature covers DSSE's
pre-authentication encoding of it. ``keyid`` is a hint only: the key is chosen among those of
the event's *source*, and must have been valid at the event's time.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
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
    SOURCE_PREFIX,
    SPECVERSION,
    TARGET_BOX,
    TIME,
    TYPE,
    parse_time,
)

HEADER = "ce_dssematerial"
PAYLOAD_TYPE = "application/vnd.boxbus.cloudevent-digest+json"
# The attributes the signature covers, and the header each travels in: the CloudEvents core
# ones, and boxbus's routing extensions (a signed order may not be turned to another box, region
# or conversation).
_COVERED = (("id", ID), ("source", SOURCE), ("specversion", SPECVERSION), ("type", TYPE),
            ("datacontenttype", CONTENT_TYPE), ("dataschema", DATASCHEMA),
            ("subject", PARTITION_KEY), ("time", TIME), ("region", REGION),
            ("targetbox", TARGET_BOX), ("correlationid", CORRELATION_ID),
            ("causationid", CAUSATION_ID))
DEFAULT_SIGNED_TYPES = (
    "boxbus.orders.OrderPlaced", "boxbus.orders.OrderAmended", "boxbus.orders.OrderConfirmed",
    "boxbus.orders.OrderCancelled", "boxbus.finance.InvoiceIssued",
    "boxbus.finance.PaymentRecorded", "boxbus.collaboration.DocumentAttached")


def _pae(payload_type: str, body: bytes) -> bytes:
    """DSSE's pre-authentication encoding: what is signed, unambiguous byte for byte."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %b %d %b" % (len(kind), kind, len(body), body)


def payload(headers: Mapping[str, bytes], value: bytes | None) -> bytes:
    """The canonical statement a signature covers, rebuilt from a record."""
    statement = {name: (headers.get(header) or b"").decode("utf-8", "replace")
                 for name, header in _COVERED}
    statement["data_sha256"] = hashlib.sha256(value or b"").hexdigest()
    return json.dumps(statement, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class PublicKey:
    """One key of one box, as the control topic publishes it."""

    box: str
    key_id: str
    public: bytes  # raw 32-byte Ed25519 public key
    valid_from: datetime
    valid_until: datetime | None = None

    def valid_at(self, moment: datetime) -> bool:
        return self.valid_from <= moment and (self.valid_until is None
                                              or moment < self.valid_until)

    def to_record(self) -> dict[str, str | None]:
        return {"box": self.box, "key_id": self.key_id,
                "public_key": base64.b64encode(self.public).decode(),
                "valid_from": self.valid_from.isoformat(),
                "valid_until": self.valid_until.isoformat() if self.valid_until else None}

    @classmethod
    def from_record(cls, record: Mapping[str, str | None]) -> PublicKey:
        until = record.get("valid_until")
        return cls(str(record["box"]), str(record["key_id"]),
                   base64.b64decode(str(record["public_key"])),
                   datetime.fromisoformat(str(record["valid_from"])),
                   datetime.fromisoformat(until) if until else None)


@dataclass(frozen=True)
class Signer:
    """A box's signing key."""

    box: str
    key_id: str
    private: Ed25519PrivateKey

    @classmethod
    def new(cls, box: str, now: datetime | None = None) -> Signer:
        moment = now or datetime.now(UTC)
        # The time says when; the random part keeps two keys of the same second apart.
        return cls(box, f"{box}-{moment:%Y%m%dT%H%M%S}-{secrets.token_hex(3)}",
                   Ed25519PrivateKey.generate())

    def public_key(self, valid_from: datetime) -> PublicKey:
        raw = self.private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return PublicKey(self.box, self.key_id, raw, valid_from)

    def to_secret(self) -> dict[str, str]:
        raw = self.private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        return {"box": self.box, "key_id": self.key_id,
                "private_key": base64.b64encode(raw).decode()}

    @classmethod
    def from_secret(cls, secret: Mapping[str, str]) -> Signer:
        return cls(secret["box"], secret["key_id"], Ed25519PrivateKey.from_private_bytes(
            base64.b64decode(secret["private_key"])))

    def sign(self, headers: Mapping[str, bytes], value: bytes | None) -> bytes:
        """The ``ce_dssematerial`` header value for a record with these headers and bytes."""
        signature = self.private.sign(_pae(PAYLOAD_TYPE, payload(headers, value)))
        envelope = {"payloadType": PAYLOAD_TYPE, "signatures": [
            {"keyid": self.key_id, "sig": base64.b64encode(signature).decode()}]}
        return base64.b64encode(json.dumps(envelope, separators=(",", ":")).encode())


@dataclass(frozen=True)
class Verdict:
    ok: bool
    box: str
    key_id: str | None
    reason: str


class KeyRing:
    """The public keys of a network's boxes, to verify records with."""

    def __init__(self, keys: Iterable[PublicKey] = ()) -> None:
        self.keys: dict[str, list[PublicKey]] = {}
        for key in keys:
            self.keys.setdefault(key.box, []).append(key)

    def verify(self, headers: Mapping[str, bytes], value: bytes | None) -> Verdict:
        source = (headers.get(SOURCE) or b"").decode("utf-8", "replace")
        box = source.removeprefix(SOURCE_PREFIX) if source.startswith(SOURCE_PREFIX) else ""
        material = headers.get(HEADER)
        if not material:
            return Verdict(False, box, None, f"the event is not signed ({HEADER} missing), "
                           "and its type must be")
        try:
            envelope = json.loads(base64.b64decode(material, validate=True))
            (entry,) = envelope["signatures"]
            key_id, signature = str(entry["keyid"]), base64.b64decode(entry["sig"])
            if envelope["payloadType"] != PAYLOAD_TYPE:
                raise ValueError(f"payload type {envelope['payloadType']!r}")
        except (ValueError, KeyError, TypeError) as exc:
            return Verdict(False, box, None, f"{HEADER} is not a boxbus DSSE envelope: {exc}")
        try:
            moment = parse_time((headers.get(TIME) or b"").decode())
        except ValueError:
            return Verdict(False, box, key_id, "the event has no readable time to check the "
                           "key's validity against")
        candidates = [k for k in self.keys.get(box, []) if k.key_id == key_id]
        if not candidates:
            return Verdict(False, box, key_id, f"box {box!r} has no published key {key_id!r}")
        key = candidates[0]
        if not key.valid_at(moment):
            return Verdict(False, box, key_id, f"key {key_id!r} of box {box!r} was not valid "
                           f"at the event's time {moment.isoformat()}")
        try:
            Ed25519PublicKey.from_public_bytes(key.public).verify(
                signature, _pae(PAYLOAD_TYPE, payload(headers, value)))
        except (InvalidSignature, ValueError):
            return Verdict(False, box, key_id, f"the signature does not match: the event was "
                           f"changed after box {box!r} signed it, or another key signed it")
        return Verdict(True, box, key_id, f"signed by box {box!r} with key {key_id!r}")
