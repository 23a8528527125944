"""A real SMTP server on loopback (aiosmtpd) that stores every message it accepts in a Maildir.

Run as its own process by the stack (``python -m bus.devstack.smtp --port N --maildir DIR``);
tests and the demo read what arrived with :func:`read_maildir`.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import mailbox
import signal
import smtplib
from pathlib import Path
from typing import Any

from bus.devstack import procs
from bus.errors import PrerequisiteError


class MaildirHandler:
    """aiosmtpd handler: deliver each accepted message into the Maildir, envelope included."""

    def __init__(self, maildir: Path) -> None:
        self._box = mailbox.Maildir(maildir, create=True)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = mailbox.MaildirMessage(envelope.original_content or envelope.content)
        message["X-Boxbus-Envelope-From"] = str(envelope.mail_from)
        message["X-Boxbus-Envelope-To"] = ", ".join(envelope.rcpt_tos)
        self._box.add(message)
        return "250 Message accepted for delivery"


def read_maildir(maildir: Path) -> list[mailbox.MaildirMessage]:
    """Every message delivered so far, oldest first."""
    box = mailbox.Maildir(maildir, create=False)
    messages = [box.get_message(key) for key in box.iterkeys()]
    return sorted(messages, key=lambda m: m.get_date())


def serve(host: str, port: int, maildir: Path) -> None:
    from aiosmtpd.controller import Controller

    controller = Controller(MaildirHandler(maildir), hostname=host, port=port)
    controller.start()
    stopped = asyncio.Event()

    async def wait() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopped.set)
        await stopped.wait()

    try:
        asyncio.run(wait())
    finally:
        controller.stop()


def start(python: str, port: int, maildir: Path, log_path: Path) -> procs.ProcessRecord:
    if importlib.util.find_spec("aiosmtpd") is None:
        raise PrerequisiteError(
            "the aiosmtpd package (the local stack's SMTP server) is not installed",
            hint="pip install 'boxbus[stack]', or set BOXBUS_SMTP_HOST to use your own server")
    argv = [python, "-m", "bus.devstack.smtp", "--port", str(port), "--maildir", str(maildir)]
    return procs.spawn("smtp", argv, log_path=log_path)


async def wait_ready(port: int, record: procs.ProcessRecord, *, timeout: float = 20.0) -> None:
    async def answers() -> bool:
        return await asyncio.to_thread(_answers, port)

    await procs.wait_until(answers, what="the SMTP server", records=[record], timeout=timeout,
                           hint="read the log; a port in use is the usual cause")


def _answers(port: int) -> bool:
    try:
        with smtplib.SMTP(procs.LOOPBACK, port, timeout=2) as client:
            code, _ = client.noop()
            return code == 250
    except (OSError, smtplib.SMTPException):
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description="boxbus local SMTP server (Maildir storage)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--maildir", type=Path, required=True)
    args = parser.parse_args()
    serve(args.host, args.port, args.maildir)


if __name__ == "__main__":
    main()
