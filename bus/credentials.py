"""Where boxbus keeps the passwords it made for the network's Kafka users.

Kafka keeps only salted hashes, so the one copy a box can be given lives here: one JSON file
per user, ``<run dir>/credentials/<user>.json``, mode 0600 in a 0700 folder, in the form
``boxbus box credentials --json`` prints (user name, password, brokers, protocol, mechanism).
On the local stack the run directory is the stack's, and ``boxbus dev down`` removes it with
the cluster. In production point ``BOXBUS_RUN_DIR`` at storage as private as a secret store,
or hand each password to the box and delete the file.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from bus.kafka import KafkaAccess
from bus.settings import SaslMechanism, Settings
from bus.signing import Signer


def write_private(path: Path, data: dict[str, object]) -> None:
    """Write JSON that only the owner may read (0600 from the first byte, folder 0700)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, indent=2)
    os.replace(tmp, path)


@dataclass(frozen=True)
class CredentialStore:
    folder: Path

    def path(self, user: str) -> Path:
        return self.folder / f"{user}.json"

    def password(self, user: str) -> str | None:
        try:
            found: str = json.loads(self.path(user).read_text())["password"]
        except (OSError, ValueError, KeyError):
            return None
        return found

    def users(self) -> set[str]:
        if not self.folder.is_dir():
            return set()
        return {p.stem for p in self.folder.glob("*.json") if not p.stem.endswith(".signing")}

    def signing_path(self, user: str) -> Path:
        return self.folder / f"{user}.signing.json"

    def signer(self, user: str) -> Signer | None:
        """The box's signing key, if boxbus made one for it."""
        try:
            return Signer.from_secret(json.loads(self.signing_path(user).read_text()))
        except (OSError, ValueError, KeyError):
            return None

    def save_signer(self, user: str, signer: Signer) -> Path:
        write_private(self.signing_path(user), dict(signer.to_secret()))
        return self.signing_path(user)

    @classmethod
    def of(cls, settings: Settings) -> CredentialStore:
        return cls(settings.run_dir / "credentials")

    def save(self, user: str, password: str, kafka: KafkaAccess) -> Path:
        """Keep ``user``'s password with how to reach the brokers it is valid on."""
        write_private(self.path(user), dict(describe(user, password, kafka)))
        return self.path(user)

    def forget(self, user: str) -> None:
        """Drop the login; a signing key stays (its signatures must stay verifiable)."""
        self.path(user).unlink(missing_ok=True)

    def access(self, user: str, kafka: KafkaAccess) -> KafkaAccess | None:
        """``kafka``'s brokers, logged in as ``user``; None when no password is kept."""
        password = self.password(user)
        if password is None:
            return None
        return kafka.as_principal(user, SecretStr(password))


def new_password() -> str:
    return secrets.token_urlsafe(24)


def describe(user: str, password: str, kafka: KafkaAccess) -> dict[str, str]:
    """What a client needs to connect as ``user`` (the keys of `box credentials --json`)."""
    login = kafka.as_principal(user, password)
    return {"username": user, "password": password, "bootstrap_servers": kafka.bootstrap,
            "security_protocol": login.security_protocol.value,
            "sasl_mechanism": (login.sasl_mechanism or SaslMechanism.SCRAM_SHA_512).value}

