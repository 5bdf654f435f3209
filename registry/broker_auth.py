"""Broker credentials and ACL: each agent may publish only under its own topic root.

The MQTT password of an agent is its registry token; the registry keeps only mosquitto's PBKDF2-SHA512 form
of it (``$7$`` in mosquitto's password file, the format ``mosquitto_passwd`` writes), so it can rewrite the
password file at any time without knowing a secret. The ACL uses mosquitto's ``%u`` patterns: an agent whose
username is its id may write its own telemetry, heartbeat, status (and last will) and events, and read its
own assignment; the registry's user reads everything and writes assignments.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from pathlib import Path

from edgejoule.schemas import topics

PBKDF2_ITERATIONS = 101  # mosquitto_passwd's own choice for the $7$ format
REGISTRY_USER = "edgejoule-registry"


def mosquitto_hash(password: str, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, PBKDF2_ITERATIONS)
    return f"$7${PBKDF2_ITERATIONS}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def acl_text(registry_user: str = REGISTRY_USER) -> str:
    root = topics.agent_root("%u")
    agent_lines = [f"pattern write {root}/{kind}" for kind in ("telemetry", "heartbeat", "status", "events")]
    return "\n".join([
        f"user {registry_user}",
        f"topic read {topics.PREFIX}/#",
        f"topic write {topics.assignment('+')}",
        "",
        *agent_lines,
        f"pattern read {root}/assignment",
    ]) + "\n"


def write_auth_files(directory: Path, agents: dict[str, str], registry_user: str = REGISTRY_USER,
                     registry_password_hash: str | None = None) -> tuple[Path, Path]:
    """Write ``passwd`` and ``acl`` for mosquitto (``password_file``, ``acl_file``); ``agents`` maps each id to
    its stored hash. Each file is replaced atomically, readable by the broker's own user."""
    directory.mkdir(parents=True, exist_ok=True)
    users = dict(agents)
    if registry_password_hash:
        users[registry_user] = registry_password_hash
    passwd, acl = directory / "passwd", directory / "acl"
    for path, text in ((passwd, "".join(f"{user}:{h}\n" for user, h in sorted(users.items()))),
                       (acl, acl_text(registry_user))):
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        os.chmod(tmp, 0o644)  # mosquitto drops to its own user; the file holds only salted hashes
        os.replace(tmp, path)
    return passwd, acl


def agent_hashes(session) -> dict[str, str]:
    from sqlalchemy import select

    from edgejoule.registry.db import AgentRow

    rows = session.execute(select(AgentRow.id, AgentRow.mqtt_password_hash).where(AgentRow.mqtt_password_hash.is_not(None)))
    return dict(rows.all())
