"""Client quotas of the network's Kafka users: how many bytes a second each may produce and
fetch, per broker. A flooding box is slowed by the brokers (its acks and fetches are delayed),
never refused, so the others keep their share.

Neither Python client offers quotas (aiokafka has DescribeClientQuotas in its protocol module
only, confluent-kafka has none: librdkafka#5227), so the two requests are written here on
aiokafka's protocol classes and sent through its admin client's connection.
"""

from __future__ import annotations

from typing import Any

from aiokafka.protocol.admin import DescribeClientQuotasRequest
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import Array, Boolean, Float64, Int16, Int32, Schema, String

from bus.errors import ComponentFailed, KafkaAccessDenied
from bus.kafka import KafkaAccess, start_or_close

PRODUCE, FETCH = "producer_byte_rate", "consumer_byte_rate"
_SPECIFIED = 2  # DescribeClientQuotas match type: every entity with a name of its own


class AlterClientQuotasResponse_v0(Response):  # type: ignore[misc]  # Kafka's naming
    API_KEY = 49
    API_VERSION = 0
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("entries", Array(
            ("error_code", Int16),
            ("error_message", String("utf-8")),
            ("entity", Array(("entity_type", String("utf-8")),
                             ("entity_name", String("utf-8")))))),
    )


class AlterClientQuotasRequest_v0(RequestStruct):  # type: ignore[misc]
    API_KEY = 49
    API_VERSION = 0
    RESPONSE_TYPE = AlterClientQuotasResponse_v0
    SCHEMA = Schema(
        ("entries", Array(
            ("entity", Array(("entity_type", String("utf-8")),
                             ("entity_name", String("utf-8")))),
            ("ops", Array(("key", String("utf-8")), ("value", Float64),
                          ("remove", Boolean))))),
        ("validate_only", Boolean),
    )


class AlterClientQuotasRequest(Request[AlterClientQuotasRequest_v0]):  # type: ignore[misc]
    API_KEY = 49

    def __init__(self, entries: list[Any]) -> None:
        self._entries = entries

    def build(self, request_struct_class: type[AlterClientQuotasRequest_v0]
              ) -> AlterClientQuotasRequest_v0:
        return request_struct_class(self._entries, False)


class Quotas:
    """Read and set the byte-rate quotas of Kafka users, as the operator ``kafka``."""

    def __init__(self, kafka: KafkaAccess) -> None:
        self.kafka = kafka

    async def _send(self, request: Request[Any]) -> Any:
        admin = self.kafka.admin()
        await start_or_close(admin, self.kafka)
        try:
            # No public call sends a request of one's own.
            return await admin._send_request(request)
        finally:
            await admin.close()

    async def all(self) -> dict[str, dict[str, float]]:
        """Every user that has quotas of its own, with them (one request)."""
        response = await self._send(DescribeClientQuotasRequest(
            [("user", _SPECIFIED, None)], False))
        _check(response.error_code, response.error_message, "the users' quotas")
        found: dict[str, dict[str, float]] = {}
        for entity, values in response.entries:
            names = {kind: name for kind, name in entity}
            user = names.get("user")
            if user is not None and len(names) == 1:  # a user's own, not a user+client one
                found[user] = {name: value for name, value in values}
        return found

    async def of(self, users: list[str]) -> dict[str, dict[str, float]]:
        """The quotas set on each of ``users`` (an empty dict for a user with none)."""
        every = await self.all()
        return {user: every.get(user, {}) for user in users}

    async def set(self, wanted: dict[str, dict[str, float]]) -> None:
        """Set each user's quotas to exactly ``wanted[user]`` (rates it lacks are removed)."""
        if not wanted:
            return
        entries = [
            ([("user", user)],
             [(key, float(rates.get(key, 0.0)), key not in rates) for key in (PRODUCE, FETCH)])
            for user, rates in sorted(wanted.items())]
        response = await self._send(AlterClientQuotasRequest(entries))
        for error_code, error_message, entity in response.entries:
            _check(error_code, error_message, f"the quotas of {entity}")


def _check(error_code: int, error_message: str | None, what: str) -> None:
    if error_code == 0:
        return
    if error_code == 31:  # CLUSTER_AUTHORIZATION_FAILED
        raise KafkaAccessDenied(f"Kafka refused to read or set {what}",
                                hint="quotas are the cluster operator's: log in as a super user")
    raise ComponentFailed(f"Kafka could not read or set {what}: error {error_code} "
                          f"{error_message or ''}".strip(),
                          hint="check the brokers (`boxbus dev status`)")
