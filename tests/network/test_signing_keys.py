"""A box's signing key rolls over (an overlap keeps the old one valid while its processes
restart) or is revoked (a leaked key: events dated from then on with it are refused), and the
inbox's check, reading the keys from the signing control topic, follows both. Events signed
before stay verifiable: keys are never removed, their validity is closed."""

from __future__ import annotations

import json
import subprocess
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from bus import Envelope, Settings, naming
from bus.credentials import CredentialStore
from bus.kafka import KafkaAccess
from bus.signing import HEADER, Signer
from bus.topology import apply_plan, make_plan, parse_topology
from bus.topology.keys import rotate_signing_key
from connectors.box.signatures import SignatureCheck
from tests.conftest import boxbus_cli

pytestmark = pytest.mark.stack

ORDER = "boxbus.orders.OrderPlaced"
NETWORK = """\
regions:
  north: {partitions: 1}
boxes:
  - {id: shop, region: north, company: shop}
  - {id: mill, region: north, company: mill}
relationships:
  - {kind: trade, buyer: shop, supplier: mill}
"""


class Signed:
    """A record as the inbox gets it, signed by ``signer`` at ``moment``."""

    topic, partition, offset, timestamp, key = "inbox", 0, 0, 0, b"po-1"

    def __init__(self, signer: Signer, moment: datetime) -> None:
        headers = dict(Envelope(id=str(uuid.uuid4()), source_box=signer.box, type=ORDER,
                                time=moment, region="north", partition_key="po-1",
                                target_box="mill", correlation_id="po-1").to_headers())
        self.value = b"\x00order"
        headers[HEADER] = signer.sign(headers, self.value)
        self.headers = list(headers.items())


async def test_rotation_overlaps_and_revocation_refuses_later_events(
    ns_settings: Settings, kafka: KafkaAccess, env_for_cli: dict[str, str],
) -> None:
    ns = ns_settings.topic_namespace
    await apply_plan(kafka, await make_plan(ns_settings, kafka, parse_topology(NETWORK)))
    store = CredentialStore.of(ns_settings)
    user = naming.box_principal(ns, "shop")
    first = store.signer(user)
    assert first is not None
    check = SignatureCheck(kafka, ns, refresh_every=0)
    await check.load()
    now = datetime.now(UTC)
    assert await check.refused(Signed(first, now), ORDER) is None

    # Rolled over through the command: the new key signs from now on, the old one still
    # verifies for the overlap (a relay started before keeps working until restarted).
    shown = subprocess.run(
        [*boxbus_cli(), "box", "rotate-signing-key", "--box", "shop", "--overlap", "600",
         "--json"], env={**env_for_cli, "BOXBUS_TOPIC_NAMESPACE": ns},
        capture_output=True, text=True, timeout=60, check=True)
    rotation = json.loads(shown.stdout)
    second = store.signer(user)
    assert second is not None and second.key_id != first.key_id
    assert rotation["current"]["key_id"] == second.key_id
    assert rotation["retired"]["key_id"] == first.key_id
    until = datetime.fromisoformat(rotation["retired"]["valid_until"])
    assert timedelta(seconds=590) < until - now < timedelta(seconds=700)
    await check.load()
    # (The new key is valid from when the command made it: a busy machine starts the command
    # a few seconds after ``now``.)
    made = datetime.fromisoformat(rotation["current"]["valid_from"])
    assert await check.refused(Signed(second, max(now, made) + timedelta(seconds=1)),
                               ORDER) is None
    assert await check.refused(Signed(first, now + timedelta(seconds=60)), ORDER) is None
    late = await check.refused(Signed(first, until + timedelta(seconds=1)), ORDER)
    assert late is not None and "was not valid" in late.message

    # The second key leaked a minute ago (before it was even made): revoked since then.
    leaked_at = datetime.now(UTC) - timedelta(minutes=1)
    revoked = await rotate_signing_key(kafka, store, ns, "shop", revoke=True, since=leaked_at)
    assert revoked.retired.key_id == second.key_id
    assert revoked.retired.valid_until == max(leaked_at, revoked.retired.valid_from)
    third = store.signer(user)
    assert third is not None and third.key_id == revoked.current.key_id
    await check.load()
    refused = await check.refused(Signed(second, datetime.now(UTC)), ORDER)
    assert refused is not None and second.key_id in refused.message
    assert await check.refused(Signed(third, datetime.now(UTC)), ORDER) is None
    # Events of the first key within its own validity still verify: nothing was removed.
    assert await check.refused(Signed(first, now), ORDER) is None
