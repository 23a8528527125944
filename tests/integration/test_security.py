"""The local stack is secure by default: SASL/SCRAM on the client listener, an authenticated
controller listener, the StandardAuthorizer refusing what no ACL allows, and super users for
the operator and the nodes only. Clients that do not log in, or log in wrongly, are refused
with one clear error."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from aiokafka.errors import KafkaConnectionError

from bus import KafkaAccessDenied, Settings
from bus.devstack import StackInfo
from bus.devstack.state import StackState
from bus.kafka import KafkaAccess, start_or_close
from tests.conftest import boxbus_cli

pytestmark = [pytest.mark.stack, pytest.mark.embedded]


async def _refusal(kafka: KafkaAccess) -> KafkaAccessDenied:
    admin = kafka.admin(request_timeout_ms=5000)
    with pytest.raises(KafkaAccessDenied) as refused:
        await start_or_close(admin, kafka)
    return refused.value


async def test_the_operator_logs_in_and_nobody_else(
    settings: Settings, stack: StackInfo, kafka: KafkaAccess
) -> None:
    # The operator's credentials: in the run directory, readable by their owner only.
    assert stack.kafka_credentials is not None
    assert stack.kafka_credentials.is_relative_to(settings.run_dir)
    assert stack.kafka_credentials.stat().st_mode & 0o777 == 0o600
    assert json.loads(stack.kafka_credentials.read_text())["username"] == "admin"
    assert kafka.principal == "User:admin"
    admin = kafka.admin()
    await start_or_close(admin, kafka)
    await admin.close()

    anonymous = KafkaAccess(kafka.bootstrap)
    assert "requires a login" in (await _refusal(anonymous)).message
    wrong = kafka.as_principal("admin", "not-the-password")
    assert "refused the login of User:admin" in (await _refusal(wrong)).message
    unknown = kafka.as_principal("nobody", "whatever")
    assert "refused the login of User:nobody" in (await _refusal(unknown)).message


async def test_the_controller_listener_takes_no_anonymous_client(settings: Settings) -> None:
    state = StackState.load(settings.run_dir)
    assert state is not None
    controller = f"127.0.0.1:{state.ports.kafka[0].controller_port}"
    admin = KafkaAccess(controller).admin(request_timeout_ms=3000)
    with pytest.raises(KafkaConnectionError):
        await start_or_close(admin)


def test_a_command_without_the_login_says_so(
    stack: StackInfo, env_for_cli: dict[str, str]
) -> None:
    bare = {k: v for k, v in os.environ.items() if not k.startswith("BOXBUS_")}
    for extra, says in [
        ({}, "requires a login"),
        ({"BOXBUS_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
          "BOXBUS_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
          "BOXBUS_KAFKA_SASL_USERNAME": "admin", "BOXBUS_KAFKA_SASL_PASSWORD": "wrong"},
         "refused the login of User:admin"),
    ]:
        result = subprocess.run(
            [*boxbus_cli(), "events", "tail", "boxbus.region.north", "--idle", "1"],
            env={**bare, "BOXBUS_KAFKA_BOOTSTRAP_SERVERS": str(stack.kafka_bootstrap),
                 "BOXBUS_SCHEMA_REGISTRY_URL": str(stack.schema_registry_url), **extra},
            capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 2, result.stderr
        assert says in result.stderr and "Traceback" not in result.stderr
        assert result.stderr.count("error:") == 1
