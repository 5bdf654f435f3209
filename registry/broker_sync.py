"""The broker's agent logins kept in step with the agents table, through broker outages and restarts.

Commands sent once, at registration, rotation or revocation, were lost when the broker was away and the registry
worker that held them stopped before it came back. So the database is the truth, and on every (re)connection,
after every change and after any command the broker did not confirm, a reconciling pass compares the broker's
logins (``listClients``) with the agents table and sends what differs, in batches: logins of agents no longer
registered are deleted with their roles; a registered agent without a login gets one, and a login whose stamp is
not its current credential's gets the current password (``broker_passwords``: derived from the registry's secret
and the token's hash, so any worker can give it, whoever issued the token). Each command carries a correlation id
and counts as done only when the plugin's response topic answers it without an error ("not found" for a deletion
counts as done).

Several workers may reconcile at once: every command is idempotent, and a pass counts as settled only if the
agents table still says after its commands what it said before them, so a worker that wrote a password an
instant before another worker's rotation committed goes round again and writes the newer one.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from typing import Any, Callable

from edgejoule.registry.broker_auth import (
    CONTROL_TOPIC,
    agent_credentials,
    agent_logins,
    create_login_commands,
    delete_login_commands,
    set_password_commands,
)
from edgejoule.registry.broker_passwords import BrokerPasswords

log = logging.getLogger("registry.broker_sync")


class Unanswered(Exception):
    """The plugin did not answer ``listClients``: no plugin on this broker, or the broker went away meanwhile."""


BATCH = 100  # commands per control message: bounded work for the plugin and bounded payloads
ANSWER_S = 10.0  # how long a command waits for the plugin's response before the pass is retried
RETRY_S = 2.0
CONFIRM_S = 5.0  # how long a registration or rotation waits for the broker to confirm the login


class BrokerLogins:
    """Reconciles the broker's dynamic-security logins with the agents table in a thread of its own (a pass waits
    for the broker's answers, which arrive on paho's network thread)."""

    def __init__(self, sessions, publish: Callable[[str, str], None], passwords: BrokerPasswords) -> None:
        self.sessions, self.publish, self.passwords = sessions, publish, passwords
        self._lock = threading.Lock()
        self._waiting: set[str] = set()  # correlation ids of the commands sent and not yet answered
        self._answers: dict[str, dict[str, Any]] = {}  # correlation id: the plugin's response
        self._answered = threading.Condition(self._lock)
        # changes asked for, and of those the ones a settled pass has covered: a registration waits for its own
        self._asked = 0
        self._settled = 0
        self._wake = threading.Event()
        self._ready = threading.Event()  # connected, with the control responses subscribed
        self._stopping = threading.Event()
        self._foreign_reported = False
        self._unanswered = False  # logged that the plugin does not answer
        # the plugin answered the last listing: only then does a registration wait for its confirmation (a broker
        # without the plugin, an anonymous development one, would hold every registration for CONFIRM_S)
        self._answering = False
        self._thread = threading.Thread(target=self._run, name="broker-logins", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        with self._answered:
            self._answered.notify_all()
        self._thread.join(ANSWER_S + 1)

    def changed(self, wait: bool = False) -> None:
        """The agents table changed (a registration, rotation or revocation): reconcile now. ``wait``: while the
        broker is connected, wait (a few seconds at most) until a pass has covered the change, so the agent that
        gets its login next can use it."""
        with self._lock:
            self._asked += 1
            ticket = self._asked
        self._wake.set()
        if wait and self._ready.is_set() and self._answering:
            with self._answered:
                self._answered.wait_for(lambda: self._settled >= ticket, CONFIRM_S)

    def connected(self) -> None:
        """Connected and subscribed to the plugin's responses: reconcile whatever happened meanwhile."""
        self._ready.set()
        self._wake.set()

    def disconnected(self) -> None:
        self._ready.clear()

    def answer(self, payload: bytes) -> None:
        """One message on the plugin's response topic (paho's thread): hand each answer to the pass waiting."""
        with self._answered:
            for answer in json.loads(payload).get("responses", []):
                if answer.get("correlationData") in self._waiting:
                    self._answers[answer["correlationData"]] = answer
            self._answered.notify_all()

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait()
            if self._stopping.is_set():
                return
            self._wake.clear()
            if not self._ready.is_set():
                continue  # connected() wakes the next pass
            with self._lock:
                asked = self._asked
            try:
                settled = self.reconcile()
            except Unanswered as exc:  # no plugin (an anonymous broker), or the broker gone: connected() wakes us
                if self._ready.is_set() and not self._stopping.is_set() and not self._unanswered:
                    self._unanswered = True
                    log.warning("the broker did not answer its dynamic-security plugin's listClients: %s", exc)
                settled = True
            except Exception:  # noqa: BLE001 - the database away, or a command unanswered: the next pass tries again
                log.exception("could not reconcile the broker's logins; retrying")
                settled = False
            if settled:
                with self._answered:
                    self._settled = max(self._settled, asked)
                    self._answered.notify_all()
            elif not self._wake.wait(RETRY_S):  # new work (or stop) goes first; else retry
                self._wake.set()

    def reconcile(self) -> bool:
        """One pass; True when the broker holds exactly the logins of the agents table."""
        try:
            [listed] = self._call([{"command": "listClients", "verbose": True}])
        except TimeoutError as exc:
            self._answering = False
            raise Unanswered(str(exc)) from None
        self._answering = True
        if "error" in listed:
            raise RuntimeError(f"listClients: {listed['error']}")
        on_broker = agent_logins(listed["data"]["clients"])
        stored = self._stored()
        stale = {a: h for a, h in stored.items() if on_broker.get(a) != self.passwords.stamp(a, h)}
        foreign = sorted(a for a in stale if self.passwords.foreign(on_broker.get(a, "")))
        if foreign and not self._foreign_reported:
            self._foreign_reported = True
            log.error("the broker logins of %s were made with another broker secret (this worker's key is %s): "
                      "every registry worker must read the same EDGEJOULE_REGISTRY_BROKER_SECRET_FILE; setting them "
                      "to this worker's", ", ".join(foreign[:10]), self.passwords.fingerprint)
        work: list[tuple[str, list[dict[str, Any]]]] = [
            *[(a, delete_login_commands(a)) for a in sorted(on_broker.keys() - stored.keys())],
            *[(a, (set_password_commands if a in on_broker else create_login_commands)(
                a, self.passwords.password(a, h), self.passwords.stamp(a, h))) for a, h in sorted(stale.items())],
        ]
        done = self._send(work)
        return len(done) == len(work) and (not work or self._stored() == stored)

    def _stored(self) -> dict[str, str]:
        with self.sessions() as session:
            return agent_credentials(session)

    def _send(self, work: list[tuple[str, list[dict[str, Any]]]]) -> set[str]:
        """Send each agent's commands, batched; the agents whose every command the broker confirmed."""
        done: set[str] = set()
        for first in range(0, len(work), BATCH // 3):
            chunk = work[first:first + BATCH // 3]
            answers = self._call([command for _, commands in chunk for command in commands])
            position = 0
            for agent_id, commands in chunk:
                mine = answers[position:position + len(commands)]
                position += len(commands)
                failed = [a for a in mine if "error" in a and not _harmless(a)]
                for answer in failed:
                    log.error("the broker refused %s for %s: %s", answer.get("command"), agent_id, answer["error"])
                if not failed:
                    done.add(agent_id)
        return done

    def _call(self, commands: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Publish ``commands`` in one control message and wait for the plugin's answer to each, in order."""
        ids = [uuid.uuid4().hex for _ in commands]
        with self._lock:
            self._waiting.update(ids)
        self.publish(CONTROL_TOPIC, json.dumps({"commands": [c | {"correlationData": i}
                                                             for c, i in zip(commands, ids)]}))
        with self._answered:
            answered = self._answered.wait_for(
                lambda: self._stopping.is_set() or all(i in self._answers for i in ids), ANSWER_S) \
                and not self._stopping.is_set()
            self._waiting.difference_update(ids)
            answers = [self._answers.pop(i, None) for i in ids]
        if not answered:
            raise TimeoutError(f"the broker answered {len(ids) - answers.count(None)} of {len(ids)} dynamic-security "
                               f"commands within {ANSWER_S} s")
        return answers


def _harmless(answer: dict[str, Any]) -> bool:
    """An error that means the command's goal holds already: what another worker (or an earlier pass cut short)
    did first. A role left behind by a deletion cut short is reused by the login created again."""
    error = answer["error"].lower()
    return (answer.get("command") in ("deleteClient", "deleteRole") and "not found" in error) or \
        (answer.get("command") == "createRole" and "already exists" in error)
