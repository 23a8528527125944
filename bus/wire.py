"""The Confluent wire format of a record value: magic byte 0, the schema id as a 4-byte
big-endian integer, then the Avro binary body."""

from __future__ import annotations

import struct

from bus.errors import WireFormatError

MAGIC = 0
HEADER = struct.Struct(">bI")


def frame(schema_id: int, body: bytes) -> bytes:
    return HEADER.pack(MAGIC, schema_id) + body


def unframe(value: bytes | None) -> tuple[int, memoryview]:
    """(schema id, Avro body) of a record value, or WireFormatError saying what is wrong."""
    if not value:
        raise WireFormatError("the record has no value (a tombstone or an empty message)")
    if len(value) < HEADER.size:
        raise WireFormatError(
            f"the value is {len(value)} bytes, shorter than the 5-byte wire-format header"
        )
    magic, schema_id = HEADER.unpack_from(value)
    if magic != MAGIC:
        raise WireFormatError(
            f"the value starts with byte {magic & 0xFF:#04x}, not the magic byte 0x00: it was "
            "not written by a Confluent-compatible Avro serializer"
        )
    return schema_id, memoryview(value)[HEADER.size:]
