"""The broker's agent logins kept in step with the agents table, through broker outages and restarts.

Commands sent once, at registration, rotation or revocation, were lost when the broker was away and the registry
worker that held them stopped before it came back: a revoked agent kept its login. So the database is the truth,
and on every (re)connection, after every change and after any command the broker did not confirm, a reconciling
pass compares the broker's logins (``listClients``) with the agents table and sends what differs in batches:
logins of agents no longer registered are deleted with their roles; a token this worker issued (registration or
rotation) creates the login or sets its password, and is held in memory until the broker confirmed it and a later
``listClients`` shows the login. Each command carries a correlation id and counts as done only when the plugin's
response topic answers it without an error ("not found" for a deletion counts as done).

Several workers may reconcile at once: deletions are idempotent, and only the worker that holds a token creates
or changes that login, after checking the token against the stored hash (a newer rotation by another worker wins).
Left to the operator: the plugin's control API (mosquitto 2.0) takes passwords only in clear, so a login that
exists only in the database, whose token no live worker holds (registered while the broker was down by a worker
that stopped before it came back), is logged; ``edgejoule registry broker-auth`` or a token rotation gives it.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from typing import Any, Callable

from edgejoule.registry.broker_auth import (
    CONTROL_TOPIC,
    agent_hashes,
    agent_logins,
    create_login_commands,
    delete_login_commands,
    set_password_commands,
    token_matches,
)

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

    def __init__(self, sessions, publish: Callable[[str, str], None]) -> None:
        self.sessions, self.publish = sessions, publish
        self._tokens: dict[str, str] = {}  # agent id: a token issued here that the broker may not have yet
        self._created: set[str] = set()  # of those, the logins whose creation the broker confirmed
        self._lock = threading.Lock()
        self._waiting: set[str] = set()  # correlation ids of the commands sent and not yet answered
        self._answers: dict[str, dict[str, Any]] = {}  # correlation id: the plugin's response
        self._answered = threading.Condition(self._lock)
        self._wake = threading.Event()
        self._ready = threading.Event()  # connected, with the control responses subscribed
        self._stopping = threading.Event()
        self._reported: set[str] = set()  # agents already logged as lacking a login this worker cannot give
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

    def issued(self, agent_id: str, token: str) -> None:
        """A token was issued (registration or rotation): hold it until the broker has it. While the broker is
        connected, wait (a few seconds at most) for its confirmation, so the agent that gets the token can log in."""
        with self._lock:
            self._tokens[agent_id] = token
            self._created.discard(agent_id)
        self._wake.set()
        if self._ready.is_set() and self._answering:
            with self._answered:
                self._answered.wait_for(lambda: self._tokens.get(agent_id) != token or agent_id in self._created,
                                        CONFIRM_S)

    def changed(self) -> None:
        """The agents table changed (a revocation): reconcile now."""
        self._wake.set()

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
            if not settled and not self._wake.wait(RETRY_S):  # new work (or stop) goes first; else retry
                self._wake.set()

    def reconcile(self) -> bool:
        """One pass; True when the broker holds exactly what it should (as far as this worker can give it)."""
        try:
            [listed] = self._call([{"command": "listClients", "verbose": True}])
        except TimeoutError as exc:
            self._answering = False
            raise Unanswered(str(exc)) from None
        self._answering = True
        if "error" in listed:
            raise RuntimeError(f"listClients: {listed['error']}")
        on_broker = agent_logins(listed["data"]["clients"])
        with self.sessions() as session:  # read after the listing: a login created since is in both
            stored = agent_hashes(session)
        with self._lock:
            tokens, created = dict(self._tokens), set(self._created)
        mine = {a: t for a, t in tokens.items() if a in stored and token_matches(t, stored[a])}
        # revoked, or rotated again by another worker: not this worker's to give any more; created and listed: done
        # (created and not listed: another worker's deletion raced the creation, which is made again)
        self._drop({a: t for a, t in tokens.items() if a not in mine or (a in created and a in on_broker)})
        mine = {a: t for a, t in mine.items() if not (a in created and a in on_broker)}
        work: list[tuple[str, list[dict[str, Any]]]] = [
            *[(a, delete_login_commands(a)) for a in sorted(on_broker - stored.keys())],
            *[(a, set_password_commands(a, t) if a in on_broker else create_login_commands(a, t))
              for a, t in sorted(mine.items())],
        ]
        unknown = stored.keys() - on_broker - mine.keys() - self._reported
        if unknown:
            self._reported |= unknown
            log.warning("agents without a broker login whose token this worker does not hold: %s; run `edgejoule "
                        "registry broker-auth` or rotate their tokens", ", ".join(sorted(unknown)))
        done = self._send(work)
        self._drop({a: t for a, t in mine.items() if a in on_broker and a in done})
        with self._answered:  # a created login's token stays until a later listing shows it: another worker's
            self._created |= {a for a in mine.keys() - on_broker if a in done and self._tokens.get(a) == mine[a]}
            pending = bool(self._tokens)  # deletion racing this creation is seen then, and repaired
            self._answered.notify_all()
        return len(done) == len(work) and not pending

    def _drop(self, tokens: dict[str, str]) -> None:
        """Forget tokens the broker has (or that are no longer this worker's), unless a newer one was issued."""
        with self._answered:
            for agent_id, token in tokens.items():
                if self._tokens.get(agent_id) == token:
                    del self._tokens[agent_id]
                    self._created.discard(agent_id)
            self._answered.notify_all()

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
