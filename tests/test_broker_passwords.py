"""Agents' broker passwords derived from the registry's secret (issue 22): what any worker recomputes from the
agents table, and the secret file every worker reads."""

from __future__ import annotations

import threading

import pytest

from edgejoule.errors import EdgejouleError
from edgejoule.registry.broker_passwords import BrokerPasswords


def test_a_password_depends_on_the_agent_its_current_token_and_the_secret():
    key, other = BrokerPasswords(b"s" * 32), BrokerPasswords(b"t" * 32)
    password = key.password("bs-a", "h1")
    assert password == BrokerPasswords(b"s" * 32).password("bs-a", "h1")  # any worker with the secret
    assert len({password, key.password("bs-b", "h1"), key.password("bs-a", "h2"), other.password("bs-a", "h1")}) == 4
    assert key.stamp("bs-a", "h1") != key.stamp("bs-a", "h2")
    assert password not in key.stamp("bs-a", "h1")
    assert not key.foreign(key.stamp("bs-a", "h2"))  # an older credential of ours
    assert key.foreign(other.stamp("bs-a", "h1")) and not key.foreign("")  # another secret's; none at all


def test_the_secret_file_is_made_once_private_and_shared_by_workers_starting_together(tmp_path):
    path = tmp_path / "data" / "broker-secret"
    made: list[BrokerPasswords] = []
    workers = [threading.Thread(target=lambda: made.append(BrokerPasswords.at(path))) for _ in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert len({m.password("bs-a", "h") for m in made}) == 1
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert BrokerPasswords.at(path).fingerprint == made[0].fingerprint  # read again at the next start
    path.write_text("short\n")
    with pytest.raises(EdgejouleError, match="at least 16"):
        BrokerPasswords.at(path)
