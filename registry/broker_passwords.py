"""Agents' broker passwords, derived from a registry secret, so that any registry worker can give any agent its
login at any time.

mosquitto 2.0's dynamic-security control API takes a password only in clear, and the registry keeps only a hash of
an agent's token. When the broker was away at registration (or rotation) and the worker that issued the token
stopped before it came back, no worker could create the login any more. So an agent's MQTT password is not its
token but

    password = base64url(HMAC-SHA256(secret, "mqtt-password" | agent id | sha256(token)))     (RFC 2104)

which every worker holding the secret recomputes from the agents table; a rotation (a new token hash) changes it,
and so does a new secret. The agent fetches it with its token (``GET /agents/{id}/broker-login``).

Each login the registry makes on the broker carries a stamp in its ``textdescription``: the secret's fingerprint
and a tag of the credential it was made from, HMACs too, so the reconciling pass sees from ``listClients`` alone
which logins are current, and which were made with another secret (workers that do not share the secret file).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from edgejoule.errors import EdgejouleError

SECRET_BYTES = 32
STAMP_PREFIX = "edgejoule-login"


class BrokerPasswords:
    """The agents' passwords and login stamps for one secret."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise EdgejouleError(f"the broker secret has {len(secret)} bytes; at least 16 are needed")
        self._secret = secret
        self.fingerprint = self._mac("fingerprint").hex()[:12]

    @classmethod
    def at(cls, path: Path) -> "BrokerPasswords":
        """The secret in ``path``, made there (random, mode 0600) if there is none yet: written whole to a file of
        its own, then linked into place, which fails if the file exists, so workers starting at once on one data
        directory all read the one that was linked first, never a half-written one."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists():
                tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
                descriptor = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(descriptor, "w") as out:
                    out.write(secrets.token_urlsafe(SECRET_BYTES) + "\n")
                    out.flush()
                    os.fsync(out.fileno())
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    pass
                finally:
                    tmp.unlink()
            text = path.read_text().strip()
        except OSError as exc:
            raise EdgejouleError(f"cannot read or make the broker secret {path}: {exc.strerror}") from None
        return cls(text.encode())

    def _mac(self, *parts: str) -> bytes:
        return hmac.new(self._secret, "\x00".join(parts).encode(), hashlib.sha256).digest()

    def password(self, agent_id: str, token_hash: str) -> str:
        return base64.urlsafe_b64encode(self._mac("mqtt-password", agent_id, token_hash)).decode().rstrip("=")

    def stamp(self, agent_id: str, token_hash: str) -> str:
        """What the login's ``textdescription`` says when it holds ``password(agent_id, token_hash)``."""
        return f"{STAMP_PREFIX} key={self.fingerprint} credential={self._mac('stamp', agent_id, token_hash).hex()[:16]}"

    def foreign(self, stamp: str) -> bool:
        """Whether ``stamp`` was made by a registry holding another secret (not an older credential of ours)."""
        return stamp.startswith(STAMP_PREFIX) and f" key={self.fingerprint} " not in stamp
