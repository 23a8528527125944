"""Signed business documents: what a signature covers, and every way a verification fails."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bus.envelope import Envelope
from bus.signing import HEADER, KeyRing, Signer

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def record(source: str = "farm", kind: str = "boxbus.orders.OrderConfirmed",
           at: datetime = NOW) -> dict[str, bytes]:
    return dict(Envelope(id="e-1", source_box=source, type=kind, time=at, region="north",
                         partition_key="po-1").to_headers())


def test_a_signed_event_verifies_and_names_its_signer() -> None:
    farm = Signer.new("farm", NOW - timedelta(days=1))
    ring = KeyRing([farm.public_key(NOW - timedelta(days=1))])
    headers = record()
    headers[HEADER] = farm.sign(headers, b"\x00avro")
    verdict = ring.verify(headers, b"\x00avro")
    assert verdict.ok and (verdict.box, verdict.key_id) == ("farm", farm.key_id)
    # The same key, stored and read back, signs alike (what the box keeps).
    again = Signer.from_secret(farm.to_secret())
    assert ring.verify({**headers, HEADER: again.sign(headers, b"\x00avro")}, b"\x00avro").ok


def test_every_change_after_signing_is_caught() -> None:
    farm = Signer.new("farm")
    ring = KeyRing([farm.public_key(NOW - timedelta(days=1))])
    headers = record()
    headers[HEADER] = farm.sign(headers, b"body")
    assert not ring.verify(headers, b"b0dy").ok  # the data
    for name, forged in [("ce_type", b"boxbus.finance.PaymentRecorded"), ("ce_id", b"e-2"),
                         ("ce_time", b"2026-12-01T00:00:00.000Z"), ("ce_region", b"south"),
                         ("ce_targetbox", b"mill"), ("ce_correlationid", b"other"),
                         ("ce_causationid", b"e-0")]:
        verdict = ring.verify({**headers, name: forged}, b"body")
        assert not verdict.ok, name
    assert "does not match" in ring.verify({**headers, "ce_id": b"e-2"}, b"body").reason
    # The right key id with another key's signature: refused too.
    impostor = Signer(farm.box, farm.key_id, Signer.new("farm").private)
    assert "does not match" in ring.verify({**headers, HEADER: impostor.sign(headers, b"body")},
                                          b"body").reason


def test_missing_foreign_unknown_and_expired_keys_are_refused() -> None:
    farm, mill = Signer.new("farm"), Signer.new("mill")
    since = NOW - timedelta(days=10)
    expired = farm.public_key(since)
    ring = KeyRing([mill.public_key(since),
                    type(expired)(expired.box, expired.key_id, expired.public, since,
                                  NOW - timedelta(days=1))])
    unsigned = record()
    assert "not signed" in ring.verify(unsigned, b"x").reason
    # mill's own valid key on an event claiming to be farm's: chosen by source, not keyid.
    claimed = record("farm")
    claimed[HEADER] = mill.sign(claimed, b"x")
    assert "has no published key" in ring.verify(claimed, b"x").reason
    late = record("farm")
    late[HEADER] = farm.sign(late, b"x")
    assert "was not valid" in ring.verify(late, b"x").reason
    garbage = {**record(), HEADER: b"not base64 json"}
    assert "not a boxbus DSSE envelope" in ring.verify(garbage, b"x").reason


def test_public_keys_travel_as_control_records() -> None:
    farm = Signer.new("farm")
    key = farm.public_key(NOW)
    assert type(key).from_record(key.to_record()) == key
