"""`boxbus bench mail` as a user runs it, small: both rounds end with their figures, and the
local SMTP server's Maildir holds every e-mail the benchmark says it sent."""

from __future__ import annotations

import json
import subprocess

import pytest

from bus.devstack import StackInfo, read_maildir
from tests.conftest import boxbus_cli

pytestmark = pytest.mark.embedded


def test_the_mail_benchmark_reports_both_rounds(stack: StackInfo,
                                                env_for_cli: dict[str, str]) -> None:
    maildir = stack.smtp.maildir
    assert maildir is not None

    def kinds() -> list[str]:
        return [str(m["X-Boxbus-Event-Type"]) for m in read_maildir(maildir)]

    before = kinds()
    done = subprocess.run([*boxbus_cli(), "bench", "mail", "--mails", "30", "--partners", "4",
                           "--json"], env=env_for_cli, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout)
    assert found["mails"] == 30 and found["partners"] == 4
    assert found["mails_per_s"] > 0 and found["plain_mails_per_s"] > 0
    for round_ in ("with_attachments", "plain"):
        assert found[round_]["seconds"] > 0 and found[round_]["cpu_seconds"] > 0
    after = kinds()
    for kind in ("boxbus.orders.OrderPlaced", "boxbus.collaboration.CommentAdded"):
        assert after.count(kind) - before.count(kind) >= 30
    order = next(m for m in read_maildir(maildir)
                 if m["X-Boxbus-Event-Type"] == "boxbus.orders.OrderPlaced")
    names = [str(part.get_filename()) for part in order.walk() if part.get_filename()]
    assert any(n.endswith(".pdf") for n in names) and any(n.endswith(".ubl.xml") for n in names)
