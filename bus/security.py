"""The cluster's users and ACLs, read and changed as the operator.

confluent-kafka's admin client (librdkafka) has the calls this needs (ACLs since 1.x, SCRAM
users since 2.2) where aiokafka's has none (aio-libs/aiokafka#955): it is used here and only
here, in a worker thread, since its calls block. Kafka stores SCRAM credentials salted and
hashed; the clear password goes over the authenticated admin connection once.

ACL changes reach every broker through the metadata log: right after CreateAcls a
DescribeAcls may not show them yet, so :meth:`ClusterSecurity.wait_until` polls until it does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialDeletion,
    UserScramCredentialUpsertion,
)

from bus.acl import Grant, Operation, Pattern, Resource
from bus.errors import ComponentFailed, KafkaAccessDenied
from bus.kafka import KafkaAccess

SCRAM_ITERATIONS = 8192  # Kafka's minimum is 4096
_RESOURCE = {Resource.TOPIC: ResourceType.TOPIC, Resource.GROUP: ResourceType.GROUP,
             Resource.CLUSTER: ResourceType.BROKER}
_PATTERN = {Pattern.LITERAL: ResourcePatternType.LITERAL,
            Pattern.PREFIXED: ResourcePatternType.PREFIXED}
_OPERATION = {Operation.READ: AclOperation.READ, Operation.WRITE: AclOperation.WRITE,
              Operation.IDEMPOTENT_WRITE: AclOperation.IDEMPOTENT_WRITE}


def _binding(grant: Grant) -> AclBinding:
    return AclBinding(_RESOURCE[grant.resource], grant.name, _PATTERN[grant.pattern],
                      grant.principal, "*", _OPERATION[grant.operation],
                      AclPermissionType.ALLOW)


def _grant(binding: AclBinding) -> Grant | None:
    """The grant an ACL is, if it is one of the kinds boxbus makes."""
    restype: Any = binding.restype
    pattern_type: Any = binding.resource_pattern_type
    kind: Any = binding.operation
    try:
        resource = {v: k for k, v in _RESOURCE.items()}[restype]
        pattern = {v: k for k, v in _PATTERN.items()}[pattern_type]
        operation = {v: k for k, v in _OPERATION.items()}[kind]
    except KeyError:
        return None
    if (binding.permission_type != AclPermissionType.ALLOW or binding.host != "*"
            or not binding.principal.startswith("User:")):
        return None
    return Grant(binding.principal[len("User:"):], resource, binding.name, pattern, operation)


class SecurityDisabled(Exception):
    """The cluster has no authorizer: it neither stores nor enforces ACLs."""


class ClusterSecurity:
    """Users and ACLs of one cluster, as the operator ``kafka`` logs in."""

    def __init__(self, kafka: KafkaAccess, timeout: float = 30.0) -> None:
        self.kafka = kafka
        self.timeout = timeout
        self._admin = kafka.librdkafka_admin(**{"socket.timeout.ms": "10000"})

    async def _call(self, work: Callable[[], Any]) -> Any:
        try:
            return await asyncio.to_thread(work)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else exc
            text = str(getattr(error, "str", lambda: error)())
            if "SECURITY_DISABLED" in text or "No Authorizer" in text:
                raise SecurityDisabled(text) from exc
            if "AUTHORIZATION" in text.upper():
                raise KafkaAccessDenied(
                    f"Kafka refused {self.kafka.principal} the change of users or ACLs: {text}",
                    hint="run topology commands as the cluster's operator (the local stack's "
                    "admin, or BOXBUS_KAFKA_SASL_USERNAME of a super user)") from exc
            raise ComponentFailed(f"Kafka could not change users or ACLs: {text}",
                                  hint="check that the brokers run (`boxbus dev status`)") from exc

    # -- users -----------------------------------------------------------------------------------

    async def users(self) -> set[str]:
        """The SCRAM users of the cluster."""
        def describe() -> set[str]:
            # Asked for every user, it answers with one future of a dict by user.
            future: Any = self._admin.describe_user_scram_credentials(
                request_timeout=self.timeout)
            return set(future.result(self.timeout))
        return set(await self._call(describe))

    async def set_passwords(self, passwords: dict[str, str]) -> None:
        """Create or replace the SCRAM-SHA-512 credential of each user."""
        if not passwords:
            return
        info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS)

        def alter() -> None:
            futures = self._admin.alter_user_scram_credentials(
                [UserScramCredentialUpsertion(user, info, password.encode())
                 for user, password in sorted(passwords.items())],
                request_timeout=self.timeout)
            for future in futures.values():
                future.result(self.timeout)
        await self._call(alter)

    async def delete_users(self, users: Iterable[str]) -> None:
        gone = sorted(users)
        if not gone:
            return

        def alter() -> None:
            futures = self._admin.alter_user_scram_credentials(
                [UserScramCredentialDeletion(user, ScramMechanism.SCRAM_SHA_512) for user in gone],
                request_timeout=self.timeout)
            for future in futures.values():
                future.result(self.timeout)
        await self._call(alter)

    # -- ACLs ------------------------------------------------------------------------------------

    async def grants(self) -> set[Grant]:
        """Every ALLOW ACL of the kinds boxbus makes (raises SecurityDisabled without an
        authorizer)."""
        def describe() -> list[AclBinding]:
            anything: Any = None  # in a filter, None matches any name, principal or host
            everything = AclBindingFilter(ResourceType.ANY, anything, ResourcePatternType.ANY,
                                          anything, anything, AclOperation.ANY,
                                          AclPermissionType.ANY)
            return list(self._admin.describe_acls(
                everything, request_timeout=self.timeout).result(self.timeout))
        bindings = await self._call(describe)
        return {g for g in (_grant(b) for b in bindings) if g is not None}

    async def add(self, grants: Iterable[Grant]) -> None:
        """Create ACLs, in batches of a thousand (one request each)."""
        chosen = sorted(grants)
        for start in range(0, len(chosen), 1000):
            batch = [_binding(g) for g in chosen[start:start + 1000]]

            def create(batch: list[AclBinding] = batch) -> None:
                for future in self._admin.create_acls(
                        batch, request_timeout=self.timeout).values():
                    future.result(self.timeout)
            await self._call(create)

    async def remove(self, grants: Iterable[Grant]) -> None:
        chosen = sorted(grants)
        for start in range(0, len(chosen), 1000):
            filters = [AclBindingFilter(*_filter_args(g)) for g in chosen[start:start + 1000]]

            def delete(filters: list[AclBindingFilter] = filters) -> None:
                for future in self._admin.delete_acls(
                        filters, request_timeout=self.timeout).values():
                    future.result(self.timeout)
            await self._call(delete)

    async def wait_until(self, present: set[Grant], absent: set[Grant],
                         within: float = 30.0) -> None:
        """Poll until the brokers report ``present`` and no longer report ``absent``."""
        deadline = time.monotonic() + within
        while True:
            have = await self.grants()
            if present <= have and not (absent & have):
                return
            if time.monotonic() > deadline:
                missing = len(present - have) + len(absent & have)
                raise ComponentFailed(f"{missing} ACL change(s) not visible after {within:.0f} s",
                                      hint="check the brokers' logs; run the apply again")
            await asyncio.sleep(0.2)


def _filter_args(grant: Grant) -> tuple[Any, ...]:
    binding = _binding(grant)
    return (binding.restype, binding.name, binding.resource_pattern_type, binding.principal,
            binding.host, binding.operation, binding.permission_type)
