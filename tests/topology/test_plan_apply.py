"""Topology plan/apply against the real broker: plan changes nothing, apply makes the cluster
match, a second apply has nothing to do, destructive changes wait for their flag, what Kafka
cannot do is reported, and the control topics carry the network (tombstones for removals)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from bus import Settings, naming
from bus.kafka import KafkaAccess
from bus.topology import apply_plan, make_plan, parse_topology, read_control
from bus.topology.control import decode
from bus.topology.plan import _configs
from tests.conftest import boxbus_cli

pytestmark = pytest.mark.stack

NETWORK = """\
regions:
  north: {partitions: 4, retention: 3d}
  south: {partitions: 2}
boxes:
  - {id: shop, region: north, company: acme}
  - {id: dairy, region: south, company: dairy}
  - {id: farm, region: north, company: farm, kind: partner, email: a@farm.example}
relationships:
  - {kind: trade, buyer: shop, supplier: dairy}
  - {kind: trade, buyer: shop, supplier: farm}
subscriptions:
  - {box: shop, name: prices, types: [PriceListSent], where: {source: dairy}}
"""


async def topics_of(kafka: KafkaAccess, namespace: str) -> dict[str, int]:
    admin = kafka.admin()
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if t.startswith(namespace + ".")]
        return {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics(names)}
    finally:
        await admin.close()


async def test_plan_changes_nothing_apply_twice_changes_nothing(
    ns_settings: Settings, kafka: KafkaAccess,
) -> None:
    ns = ns_settings.topic_namespace
    topology = parse_topology(NETWORK)
    plan = await make_plan(ns_settings, kafka, topology)
    assert await topics_of(kafka, ns) == {}  # planning created nothing
    created = {c.target for c in plan.changes if c.action == "create-topic"}
    north = naming.region_topic(ns, "north")
    shop_ingress = naming.ingress_topic(ns, "shop")
    assert {north, naming.dlq_topic(north),
            naming.inbox_topic(ns, "shop"), naming.inbox_topic(ns, "dairy"),
            shop_ingress, naming.quarantine_topic(shop_ingress), naming.dlq_topic(shop_ingress),
            naming.mail_topic(ns), naming.control_topic(ns, "boxes")} <= created
    # A partner has no inbox; the mailer writes its ingress topic for it (its replies).
    assert {naming.ingress_topic(ns, "farm"), naming.partner_letters_topic(ns, "farm"),
            naming.dlq_topic(naming.mail_topic(ns))} <= created
    assert naming.inbox_topic(ns, "farm") not in created  # a partner has no box, no inbox
    assert {c.target for c in plan.changes if c.action == "write-control"} == {
        "boxes/shop", "boxes/dairy", "boxes/farm", "relationships/trade/shop/dairy",
        "relationships/trade/shop/farm", "subscriptions/shop/prices", "signing/types"}

    await apply_plan(kafka, plan)
    topics = await topics_of(kafka, ns)
    assert topics[north] == 4 and topics[naming.region_topic(ns, "south")] == 2
    admin = kafka.admin()
    await admin.start()
    try:
        configs = await _configs(admin, [north, naming.control_topic(ns, "boxes")])
    finally:
        await admin.close()
    assert configs[north]["retention.ms"] == str(3 * 86_400_000)
    assert configs[naming.control_topic(ns, "boxes")]["cleanup.policy"] == "compact"
    control = await read_control(kafka, ns)
    assert decode(control["boxes"]["farm"])["email"] == "a@farm.example"

    again = await make_plan(ns_settings, kafka, topology)
    assert again.empty and not again.problems


async def test_changes_destructive_ones_and_impossible_ones(
    ns_settings: Settings, kafka: KafkaAccess, env_for_cli: dict[str, str], tmp_path: Path,
) -> None:
    ns = ns_settings.topic_namespace
    await apply_plan(kafka,
                     await make_plan(ns_settings, kafka, parse_topology(NETWORK)))
    # More partitions, a shorter retention, a box and its relationship removed.
    changed = (NETWORK.replace("north: {partitions: 4, retention: 3d}",
                               "north: {partitions: 6, retention: 1d}")
               .replace("  - {id: farm, region: north, company: farm, kind: partner, "
                        "email: a@farm.example}\n", "")
               .replace("  - {kind: trade, buyer: shop, supplier: farm}\n", "")
               .replace("  - {id: dairy, region: south, company: dairy}\n",
                        "  - {id: dairy, region: south, company: dairy}\n"
                        "  - {id: bakery, region: south, company: bakery}\n"))
    changed = changed.replace("  - {kind: trade, buyer: shop, supplier: dairy}\n",
                              "  - {kind: trade, buyer: shop, supplier: dairy}\n"
                              "  - {kind: trade, buyer: shop, supplier: bakery}\n")
    file = tmp_path / "network.yaml"
    file.write_text(changed)
    env = {**env_for_cli, "BOXBUS_TOPIC_NAMESPACE": ns}

    def cli(*args: str) -> dict:  # type: ignore[type-arg]
        result = subprocess.run([*boxbus_cli(), "topology", *args, str(file), "--json"],
                                env=env, capture_output=True, text=True, timeout=120,
                                check=False)
        assert result.returncode == 0, result.stderr[-2000:]
        return json.loads(result.stdout)  # type: ignore[no-any-return]

    planned = {(c["action"], c["target"]): c for c in cli("plan")["changes"]}
    north = naming.region_topic(ns, "north")
    assert ("add-partitions", north) in planned
    assert planned[("alter-config", north)]["destructive"] is True  # retention shrinks
    assert ("create-topic", naming.inbox_topic(ns, "bakery")) in planned
    assert ("delete-control", "boxes/farm") in planned
    assert ("delete-control", "relationships/trade/shop/farm") in planned

    applied = cli("apply")
    skipped = {(c["action"], c["target"]) for c in applied["skipped_destructive"]}
    # The removed partner's topics (its ingress, written by the mailer for it, and its mail's
    # dead letters) go only when destruction is allowed.
    ingress = naming.ingress_topic(ns, "farm")
    assert skipped == {("alter-config", north)} | {("delete-topic", t) for t in (
        ingress, naming.dlq_topic(ingress), naming.quarantine_topic(ingress),
        naming.partner_letters_topic(ns, "farm"))}
    assert (await topics_of(kafka, ns))[north] == 6
    control = await read_control(kafka, ns)
    assert "farm" not in control["boxes"] and "bakery" in control["boxes"]
    assert set(control["relationships"]) == {"trade/shop/dairy", "trade/shop/bakery"}

    # Only the destructive changes are left, and the flag carries them out.
    left = {(c["action"], c["target"]) for c in cli("plan")["changes"]}
    assert left == skipped
    cli("apply", "--allow-destructive")
    assert cli("plan")["changes"] == []

    # Fewer partitions cannot be applied: reported, exit status 1, nothing changed.
    file.write_text(changed.replace("partitions: 6, retention: 1d", "partitions: 2, "
                                    "retention: 1d"))
    result = subprocess.run([*boxbus_cli(), "topology", "apply", str(file)], env=env,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 1
    assert "Kafka cannot remove partitions" in result.stderr
    assert (await topics_of(kafka, ns))[north] == 6


def test_an_invalid_file_names_line_and_field(env_for_cli: dict[str, str],
                                              tmp_path: Path) -> None:
    file = tmp_path / "bad.yaml"
    file.write_text(NETWORK.replace("supplier: dairy}", "supplier: diary}"))
    result = subprocess.run([*boxbus_cli(), "topology", "validate", str(file)],
                            env=env_for_cli, capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode != 0
    assert f"{file}:9: relationships[0].supplier: box 'diary' is not declared" in (
        result.stderr + result.stdout)
