"""Who may do what on the broker: a complete mosquitto configuration with its dynamic-security plugin, written
from the registry's agents, for the embedded broker of ``serve`` and (``edgejoule registry broker-auth``) for an
external one.

Why the dynamic-security plugin and not ``acl_file``: mosquitto 2.0's ``acl_file`` checks what a client publishes
and what it is delivered, never what it subscribes to. An agent's SUBSCRIBE to
``$share/registry/edgejoule/v1/agents/+/telemetry`` is granted (SUBACK 1), the broker then hands that member a
share of every agent's telemetry and drops it at delivery (ACL), and the senders got PUBACK 0. The plugin checks
subscriptions too (SUBACK 135 for anything but the agent's own assignment topic), binds each login to one client
id (so no login can take over the registry's session or another agent's), and takes new logins at run time on
its ``$CONTROL`` topic, so registering an agent needs no reload. Its topics cannot hold ``%u`` patterns (2.0), so
each agent has a role of its own naming its topics literally.

An agent's MQTT password is derived from a registry secret and its token's hash (``broker_passwords``): the
configuration written here holds mosquitto's PBKDF2-SHA512 form of it (salt, hash, iterations: what the plugin's
file holds), and a running broker gets new logins over the plugin's control topic, which (mosquitto 2.0) takes a
password only in clear; any registry worker can recompute it from the agents table (``broker_sync``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import pwd
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgejoule.errors import EdgejouleError
from edgejoule.files import write_atomic
from edgejoule.registry.broker_passwords import BrokerPasswords
from edgejoule.schemas import topics

PBKDF2_ITERATIONS = 101  # mosquitto_passwd's and the plugin's own choice
REGISTRY_USER = "edgejoule-registry"
CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
CONTROL_RESPONSES = f"{CONTROL_TOPIC}/response"
CONFIG_FILE, DYNSEC_FILE = "mosquitto.conf", "dynamic-security.json"
PLUGIN_PLACES = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib", "/usr/local/lib")
# messages the broker keeps per client while it is away: a registry down for a day with 100 agents sending a
# window every 10 s leaves 864,000 (mosquitto's default, 1,000, dropped acknowledged telemetry in a burst)
MAX_QUEUED_MESSAGES = 2_000_000


def mosquitto_hash(password: str, salt: bytes | None = None) -> str:
    """``$7$ITERATIONS$SALT$HASH`` (mosquitto_passwd's format), all the broker needs to check a password."""
    salt = salt or secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, PBKDF2_ITERATIONS)
    return f"$7${PBKDF2_ITERATIONS}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


@dataclass(frozen=True)
class TlsFiles:
    """A broker's TLS listener: the CA that signed its certificate (what clients verify it with), the
    certificate and its key."""

    ca: Path
    cert: Path
    key: Path


def _allow(acltype: str, topic: str) -> dict[str, Any]:
    return {"acltype": acltype, "topic": topic, "allow": True}


def agent_role(agent_id: str) -> dict[str, Any]:
    """Publish under its own topic root, subscribe to and receive its own assignment: nothing else."""
    sends = [_allow("publishClientSend", f"{topics.agent_root(agent_id)}/{kind}")
             for kind in ("telemetry", "heartbeat", "status", "events")]
    own = topics.assignment(agent_id)
    return {"rolename": f"agent-{agent_id}",
            "acls": [*sends, _allow("subscribeLiteral", own), _allow("publishClientReceive", own)]}


def registry_role() -> dict[str, Any]:
    """The ingest's shared subscriptions, the agents' assignments, and the plugin's control topic."""
    return {"rolename": REGISTRY_USER, "acls": [
        *[_allow("subscribeLiteral", f) for f in topics.REGISTRY_INGEST],  # one registry (``mqtt_shared`` off)
        *[_allow("subscribeLiteral", topics.shared(f)) for f in topics.REGISTRY_INGEST],
        _allow("publishClientReceive", f"{topics.PREFIX}/#"),
        _allow("publishClientSend", topics.assignment("+")),
        _allow("publishClientSend", CONTROL_TOPIC),
        _allow("subscribeLiteral", CONTROL_RESPONSES),
        _allow("publishClientReceive", CONTROL_RESPONSES),
    ]}


def _login(username: str, password_hash: str, role: str, client_id: str | None = None,
           stamp: str | None = None) -> dict[str, Any]:
    _, _, iterations, salt, digest = password_hash.split("$")
    login = {"username": username, "password": digest, "salt": salt, "iterations": int(iterations),
             "roles": [{"rolename": role}]}
    return login | ({"clientid": client_id} if client_id else {}) | ({"textdescription": stamp} if stamp else {})


def dynsec_config(passwords: BrokerPasswords, agents: dict[str, str], registry_hash: str,
                  registry_user: str = REGISTRY_USER) -> dict[str, Any]:
    """The plugin's file: ``agents`` maps each id to its token's hash (``agent_credentials``); every access not
    granted is refused."""
    ids = sorted(agents)
    return {
        "defaultACLAccess": {"publishClientSend": False, "publishClientReceive": False, "subscribe": False,
                             "unsubscribe": True},
        "clients": [_login(registry_user, registry_hash, REGISTRY_USER),
                    *[_login(a, mosquitto_hash(passwords.password(a, agents[a])), f"agent-{a}",
                             topics.agent_client_id(a), passwords.stamp(a, agents[a])) for a in ids]],
        "roles": [registry_role(), *[agent_role(a) for a in ids]],
        "groups": [],
    }


def create_login_commands(agent_id: str, password: str, stamp: str) -> list[dict[str, Any]]:
    """A new agent's role and login (the plugin's control API, mosquitto 2.0, takes a password only in clear)."""
    role = agent_role(agent_id)
    return [
        {"command": "createRole", **role},
        {"command": "createClient", "username": agent_id, "password": password, "textdescription": stamp,
         "clientid": topics.agent_client_id(agent_id), "roles": [{"rolename": role["rolename"]}]},
    ]


def set_password_commands(agent_id: str, password: str, stamp: str) -> list[dict[str, Any]]:
    """An existing login's new password, then its stamp (in this order: a pass cut short between the two leaves
    an old stamp, which the next pass repairs, never a new stamp on an old password). The client is disabled and
    enabled again because mosquitto disconnects a disabled client, so a session logged in with the old password
    ends now, not at its next reconnect."""
    return [
        {"command": "setClientPassword", "username": agent_id, "password": password},
        {"command": "modifyClient", "username": agent_id, "textdescription": stamp},
        {"command": "disableClient", "username": agent_id},
        {"command": "enableClient", "username": agent_id},
    ]


def delete_login_commands(agent_id: str) -> list[dict[str, Any]]:
    """A revoked agent's login and role removed: mosquitto disconnects a deleted client at once."""
    return [
        {"command": "deleteClient", "username": agent_id},
        {"command": "deleteRole", "rolename": agent_role(agent_id)["rolename"]},
    ]


def agent_logins(clients: list[dict[str, Any]]) -> dict[str, str]:
    """The agents' logins among a verbose ``listClients`` answer, each with its stamp: those bound to an agent's
    client id. The registry's own login and any login an operator added for something else are not the
    registry's to touch."""
    return {c["username"]: c.get("textdescription") or "" for c in clients
            if c["username"] != REGISTRY_USER and c.get("clientid") == topics.agent_client_id(c["username"])}


def dynsec_plugin() -> str:
    for place in PLUGIN_PLACES:
        path = Path(place) / "mosquitto_dynamic_security.so"
        if path.exists():
            return str(path)
    raise EdgejouleError("mosquitto's dynamic-security plugin (mosquitto_dynamic_security.so) was not found: "
                         "install the Debian package 'mosquitto' (2.0 or newer)")


def broker_config(directory: Path, port: int, host: str, user: str, secure: bool = True,
                  tls: TlsFiles | None = None) -> str:
    """A complete ``mosquitto.conf``: logins and access from the plugin's file (``secure``; else anonymous, for
    development), sessions and queued messages kept across restarts (persistence) and sized for outages, and with
    ``tls`` a TLS listener. ``user``: whom mosquitto runs as when started as root (it drops to that user)."""
    directory = directory.resolve()
    listener = [f"listener {port} {host}".rstrip(),
                *([f"cafile {tls.ca.resolve()}", f"certfile {tls.cert.resolve()}", f"keyfile {tls.key.resolve()}"]
                  if tls else [])]
    access = (["allow_anonymous false", f"plugin {dynsec_plugin()}", f"plugin_opt_config_file {directory / DYNSEC_FILE}"]
              if secure else ["allow_anonymous true"])
    return "\n".join([
        *listener,
        *access,
        "persistence true",
        f"persistence_location {directory}/",
        "autosave_interval 60",
        f"max_queued_messages {MAX_QUEUED_MESSAGES}",
        "max_queued_bytes 0",
        f"user {user}",
    ]) + "\n"


def write_broker_files(directory: Path, passwords: BrokerPasswords, agents: dict[str, str], registry_hash: str,
                       port: int, host: str = "",
                       user: str | None = None, registry_user: str = REGISTRY_USER,
                       tls: TlsFiles | None = None) -> tuple[Path, Path]:
    """Write ``mosquitto.conf`` and ``dynamic-security.json`` into ``directory``; start the broker with
    ``mosquitto -c DIRECTORY/mosquitto.conf``. ``user`` (default: whoever runs this) owns them and is whom
    mosquitto runs as."""
    user = user or current_user()
    conf, dynsec = write_private(directory, {
        CONFIG_FILE: broker_config(directory, port, host, user, tls=tls),
        DYNSEC_FILE: json.dumps(dynsec_config(passwords, agents, registry_hash, registry_user), indent=1)}, user)
    return conf, dynsec


def write_private(directory: Path, files: dict[str, str], user: str) -> list[Path]:
    """Write ``files`` (name: text) into ``directory`` (mode 700, files 600, each replaced atomically), owned by
    ``user`` when running as root: the broker, started as root, drops to that user, then reads and writes here."""
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    written = []
    for name, text in files.items():
        path = directory / name
        write_atomic(path, text)  # 0600: the directory is private already; the plugin's file holds password hashes
        written.append(path)
    if os.geteuid() == 0:
        for path in (directory, *written):
            shutil.chown(path, user)
    return written


def current_user() -> str:
    return pwd.getpwuid(os.geteuid()).pw_name


def agent_credentials(session) -> dict[str, str]:
    """Each registered agent's id and the hash of its current token: what its broker password derives from."""
    from sqlalchemy import select

    from edgejoule.registry.db import AgentRow

    return dict(session.execute(select(AgentRow.id, AgentRow.token_hash)).all())
