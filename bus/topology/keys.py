"""Rolling a box's signing key over, or revoking it.

A box signs with one key at a time; every key it ever held stays published in
``<ns>.control.signing`` with its validity, so an event is checked against the key that was
valid at the event's time, and an auditor can verify an old event years later. Rotating makes a
new key, valid from now, and closes the old one's validity:

- after an overlap (by default an hour): the box's running processes, which loaded the old key
  when they started, keep producing events that verify until they are restarted;
- at once with ``revoke`` (the key leaked): any event dated from now on with the old key is
  refused. Dating an event earlier is in the hands of whoever holds the key, so a leaked key's
  revocation is only as early as the moment it is known to have leaked (``since``).

The new public key is published first, then the old key's validity is closed, then the new
private half is kept: a crash in between leaves at worst a published key nobody signs with, the
old key still in use, and running the command again rotates anew.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from bus import naming
from bus.credentials import CredentialStore
from bus.errors import ConfigError
from bus.kafka import KafkaAccess, start_or_close
from bus.signing import PublicKey, Signer
from bus.topology.control import KEYS, decode, encode, read_control


@dataclass(frozen=True)
class Rotation:
    retired: PublicKey  # the old key, its validity closed
    current: PublicKey  # the new key, valid from now on
    private_key_path: str

    def as_dict(self) -> dict[str, object]:
        return {"retired": self.retired.to_record(), "current": self.current.to_record(),
                "private_key_path": self.private_key_path}


async def rotate_signing_key(kafka: KafkaAccess, store: CredentialStore, namespace: str,
                             box: str, *, overlap: timedelta = timedelta(hours=1),
                             revoke: bool = False, since: datetime | None = None,
                             now: datetime | None = None) -> Rotation:
    """Give ``box`` a new signing key; the old one stays valid for ``overlap`` (or, revoked,
    until ``since``, by default now). ``kafka`` is the operator's access."""
    moment = now or datetime.now(UTC)
    user = naming.box_principal(namespace, box)
    old = store.signer(user)
    if old is None:
        raise ConfigError(f"box {box} of network {namespace!r} has no signing key in "
                          f"{store.signing_path(user)}",
                          hint="`boxbus topology apply FILE` makes one for every box; pass "
                          "--namespace if the box is in another network")
    if since is not None and not revoke:
        raise ConfigError("--since goes with --revoke: it says from when the old key is "
                          "no longer trusted", hint="add --revoke, or leave out --since")
    published = (await read_control(kafka, namespace)).get("signing", {})
    record = published.get(f"{KEYS}{box}/{old.key_id}")
    old_public = (PublicKey.from_record(decode(record)) if record is not None
                  else old.public_key(moment))
    until = (since or moment) if revoke else moment + overlap
    if old_public.valid_until is not None:
        until = min(until, old_public.valid_until)  # never reopens a closed validity
    until = max(until, old_public.valid_from)
    retired = replace(old_public, valid_until=until)
    new = Signer.new(box, moment)
    current = new.public_key(moment)
    producer = kafka.producer(acks="all", enable_idempotence=True)
    await start_or_close(producer, kafka)
    try:
        topic = naming.control_topic(namespace, "signing")
        for key in (current, retired):
            await producer.send_and_wait(topic, encode(dict(key.to_record())),
                                         key=f"{KEYS}{box}/{key.key_id}".encode())
    finally:
        await producer.stop()
    path = store.save_signer(user, new)
    return Rotation(retired, current, str(path))
