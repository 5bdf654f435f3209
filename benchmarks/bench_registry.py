"""Registry load on loopback: simulated agents publish telemetry through mosquitto into the registry (SQLite and
PostgreSQL 15), then fleet queries over agents x reports rows.

1. Ingest: ``--agents`` simulated agents, each with its own MQTT connection (client id = agent id), publish
   ``--messages`` QoS 1 telemetry messages in all; the connections are spread over ``--publishers`` processes,
   each driving its share with one selector loop. The rate is messages stored per second from the first
   publish to the last row committed, and count in must equal count stored.
2. Queries: the table is filled with ``--agents`` x ``--reports`` windows (bulk insert; on PostgreSQL then
   VACUUM ANALYZE, as autovacuum would), then each fleet query is timed over HTTP ``--repeat`` times: p50 and p95.

    .venv/bin/python benchmarks/bench_registry.py                      # 1000 agents, 1000 reports each
    .venv/bin/python benchmarks/bench_registry.py --reports 100 --messages 20000 --backends sqlite
    .venv/bin/python benchmarks/bench_registry.py --database-url sqlite:////tmp/filled.db   # queries only

``--ingest-only`` skips the queries; ``--poison N`` puts N windows with an out-of-range ``window_end`` among the
published messages (the registry refuses them alone; the rest must all be stored).

``--store-only`` times what the MQTT ingest does with each batch of 500 received messages (``MqttIngest.store``:
parsing with the schema's checks, the sender check, the writer) on fresh SQLite databases, without a broker:
the registry's side of the ingest, apart from the publishers' and the broker's CPU (``--poison`` applies).

``--writer-only`` times the ingest's writer alone (``service.ingest_telemetry_batch`` on fresh SQLite databases,
batches of 500 as the MQTT ingest makes them, ``--repeat`` rounds of ``--messages``): no broker, no HTTP.

``--database-url`` times the queries against a database filled before (by this script with ``--reports 1000``,
kept in its ``bench-registry-*`` temporary directory): code versions compared on the same rows.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import re
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402

from edgejoule.registry.broker import EmbeddedBroker  # noqa: E402
from edgejoule.schemas import topics  # noqa: E402
from edgejoule.schemas.messages import Telemetry  # noqa: E402
from tests.fleet import Postgres, start_registry  # noqa: E402
from tests.registry_parts import T0, package, upload  # noqa: E402

SITES = ("urban-nlos", "campus-los")
MODELS_PER_SITE = 4


def telemetry(agent: int, report: int, model_index: int | None = None) -> Telemetry:
    site = SITES[agent % len(SITES)]
    model = f"{site}-m{(agent if model_index is None else model_index) % MODELS_PER_SITE}"
    start = T0 + timedelta(minutes=report)
    return Telemetry(message_id=f"{agent:05d}-{report:07d}-{time.monotonic_ns() % 10**9:09d}", agent_id=f"bs-{agent:04d}",
                     site=site, model_id=model, window_start=start, window_end=start + timedelta(minutes=1),
                     inferences=500, meter="rapl", meter_kind="measured", energy_total_uj=40.0 + agent % 7,
                     energy_dynamic_uj=20.0, idle_power_w=2.0, estimated_energy_uj=10.0, latency_ms_p50=0.5,
                     latency_ms_p95=0.9, latency_ms_p99=1.2, quality={"sum_rate": 11.0 + (agent % 5) / 10})


def poisoned(payload: str) -> str:
    """A window whose end no registry can store (year 1, +14:00): refused at parsing."""
    return re.sub(r'"window_end":"[^"]*"', '"window_end":"0001-01-01T00:00:00+14:00"', payload, count=1)


def publisher(port: int, index: int, publishers: int, agents: int, messages: int, poison: int, ready, go) -> None:
    """Every ``publishers``-th agent, each with its own MQTT connection (client id = agent id), all driven by one
    selector loop in this process: a thread per connection would not fit on 2 cores."""
    import selectors

    import paho.mqtt.client as mqtt

    mine = range(index, agents, publishers)
    acknowledged = [0]
    clients = {}
    for agent in mine:
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bs-{agent:04d}", protocol=mqtt.MQTTv5)
        client.max_inflight_messages_set(0)  # no limit: the messages go out as fast as they are published
        client.on_publish = lambda *args: acknowledged.__setitem__(0, acknowledged[0] + 1)
        client.connect("127.0.0.1", port, keepalive=120)
        clients[agent] = client
    selector = selectors.DefaultSelector()
    for client in clients.values():
        selector.register(client.socket(), selectors.EVENT_READ, client)

    def pump(done, timeout_s: float = 300) -> None:
        deadline = time.monotonic() + timeout_s
        while not done():
            if time.monotonic() > deadline:
                raise RuntimeError(f"publisher {index}: the broker did not answer in time")
            for key, _ in selector.select(0.05):
                key.data.loop_read()
            for client in clients.values():
                if client.want_write():
                    client.loop_write()

    pump(lambda: all(c.is_connected() for c in clients.values()))
    mine_messages = [n for n in range(messages) if n % agents in clients]
    every = messages // poison if poison else 0  # spread evenly among the messages
    payloads = [(n % agents, telemetry(n % agents, n // agents).model_dump_json(by_alias=True)) for n in mine_messages]
    payloads = [(agent, poisoned(p) if every and n % every == 0 and n // every < poison else p)
                for n, (agent, p) in zip(mine_messages, payloads)]
    ready.set()
    go.wait()
    for agent, payload in payloads:
        clients[agent].publish(topics.telemetry(f"bs-{agent:04d}"), payload, qos=1)
    pump(lambda: acknowledged[0] == len(payloads))
    for client in clients.values():
        client.disconnect()


def stored(poll: httpx.Client) -> int:
    """Rows committed by the MQTT ingest, from the registry's own Prometheus counter (cheap to poll)."""
    metrics = poll.get("/metrics").text
    return int(float(metrics.split('edgejoule_telemetry_ingested_total{via="mqtt"} ')[1].split()[0]))


def counted(admin: httpx.Client) -> int:
    return sum(r["windows"] for r in admin.get("/fleet", params={"group_by": "site"}).json())


def bench_ingest(server, broker: EmbeddedBroker, args) -> dict:
    with server.admin() as admin:
        while not httpx.get(server.url + "/healthz").json()["mqtt"]:
            time.sleep(0.1)
        ctx = mp.get_context("spawn")
        ready = [ctx.Event() for _ in range(args.publishers)]
        go = ctx.Event()
        procs = [ctx.Process(target=publisher, args=(broker.port, i, args.publishers, args.agents, args.messages,
                                                     args.poison, ready[i], go)) for i in range(args.publishers)]
        for p in procs:
            p.start()
        for r in ready:
            r.wait(300)
        t0 = time.perf_counter()
        go.set()
        for p in procs:
            p.join(600)
        published_s = time.perf_counter() - t0
        deadline = time.monotonic() + 300
        with httpx.Client(base_url=server.url) as poll:  # one client: a new one per poll costs an SSL context
            while stored(poll) < args.messages - args.poison and time.monotonic() < deadline:
                time.sleep(0.05)
        elapsed = time.perf_counter() - t0
        time.sleep(1.0)
        final = counted(admin)  # rows in the table, not the counter
    return {"published": args.messages, "poison": args.poison, "stored": final, "publish_s": published_s,
            "ingest_s": elapsed,
            "rate": final / elapsed, "load_average_1min": os.getloadavg()[0]}


def fill(server, args) -> float:
    """agents x reports windows straight into the database, as the ingest would store them."""
    from edgejoule.registry import service

    sessions = server.server.config.app.state.sessions
    t0 = time.perf_counter()
    batch = []
    for report in range(args.reports):
        for agent in range(args.agents):
            batch.append(telemetry(agent, report))
            if len(batch) == 5000:
                with sessions.begin() as session:
                    service.ingest_telemetry_batch(session, batch)
                batch = []
    if batch:
        with sessions.begin() as session:
            service.ingest_telemetry_batch(session, batch)
    return time.perf_counter() - t0


def _settle(server) -> None:
    """VACUUM ANALYZE the filled PostgreSQL database: what autovacuum does within minutes of a million new rows.
    Without it, its first pass over the tables lands inside the timed queries and takes one of the two cores."""
    engine = server.server.config.app.state.sessions.kw["bind"]
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE")


def bench_queries(server, args) -> dict[str, tuple[float, float]]:
    # one second after a 5-minute boundary: the most raw reports a "last hour" reads (4 per agent before the
    # first whole 5 minutes; the rest from the roll-up levels)
    last_hour = (T0 + timedelta(minutes=args.reports - 60, seconds=1)).isoformat()
    queries = {
        "one agent, all its reports": ("/fleet", {"group_by": "model", "agent_id": "bs-0007"}),
        "per model, last hour": ("/fleet", {"group_by": "model", "since": last_hour}),
        "per agent, last hour": ("/fleet", {"group_by": "agent", "since": last_hour}),
        "one model over time, 1 h buckets": ("/fleet/series", {"bucket_s": 3600, "model_id": "urban-nlos-m2"}),
        "per site, all reports": ("/fleet", {"group_by": "site"}),
        "eCAL of one model": ("/models/urban-nlos-m2/ecal", {}),
    }
    out = {}
    with server.admin() as admin:
        for name, (path, params) in queries.items():
            times = []
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                admin.get(path, params=params).raise_for_status()
                times.append((time.perf_counter() - t0) * 1000)
            times.sort()
            out[name] = (statistics.median(times), times[min(len(times) - 1, int(round(0.95 * (len(times) - 1))))])
    return out


def bench_writer(args) -> list[float]:
    """Messages per second stored by the writer alone, per round, each round on a fresh database."""
    from edgejoule.registry import service
    from edgejoule.registry.db import make_engine, session_factory
    from edgejoule.registry.migrate import upgrade

    messages = [telemetry(agent, report) for report in range(-(-args.messages // args.agents))
                for agent in range(args.agents)][: args.messages]
    rates = []
    for _ in range(args.repeat):
        url = f"sqlite:///{tempfile.mkdtemp(prefix='bench-registry-')}/writer.db"
        upgrade(url)
        sessions = session_factory(make_engine(url))
        t0 = time.perf_counter()
        for i in range(0, len(messages), 500):
            with sessions.begin() as session:
                service.ingest_telemetry_batch(session, messages[i:i + 500])
        rates.append(len(messages) / (time.perf_counter() - t0))
    return rates


def bench_store(args) -> list[float]:
    """Messages per second through ``MqttIngest.store`` (batches of 500), per round, each on a fresh database."""
    from types import SimpleNamespace

    from prometheus_client import CollectorRegistry, Counter

    from edgejoule.registry.broker_passwords import BrokerPasswords
    from edgejoule.registry.db import make_engine, session_factory
    from edgejoule.registry.ingest import MqttIngest
    from edgejoule.registry.migrate import upgrade

    every = args.messages // args.poison if args.poison else 0
    received = []
    for n in range(args.messages):
        agent, payload = n % args.agents, telemetry(n % args.agents, n // args.agents).model_dump_json(by_alias=True)
        poison = every and n % every == 0 and n // every < args.poison
        received.append(SimpleNamespace(topic=topics.telemetry(f"bs-{agent:04d}"),
                                        payload=(poisoned(payload) if poison else payload).encode()))
    rates = []
    for _ in range(args.repeat):
        server = start_registry(Path(tempfile.mkdtemp(prefix="bench-registry-")) / "data", None)
        try:
            _upload_models(server)
            _register_agents(server, args)
            metrics = CollectorRegistry()
            counters = {name: Counter(name, name, labels, registry=metrics) for name, labels in
                        (("telemetry", ["via"]), ("duplicates", []), ("rejected_messages", []), ("foreign", ["via"]))}
            url = f"sqlite:///{server.data_dir / 'registry.db'}"
            upgrade(url)
            ingest = MqttIngest("mqtt://127.0.0.1:1", session_factory(make_engine(url)), counters, BrokerPasswords(bytes(16)))
            t0 = time.perf_counter()
            for i in range(0, len(received), 500):
                ingest.store(received[i:i + 500])
            rates.append((args.messages - args.poison) / (time.perf_counter() - t0))
            assert metrics.get_sample_value("telemetry_total", {"via": "mqtt"}) == args.messages - args.poison
        finally:
            server.stop()
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=30000, help="telemetry messages published in the ingest run")
    parser.add_argument("--publishers", type=int, default=2)
    parser.add_argument("--reports", type=int, default=1000, help="reports per agent for the query benchmark")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--database-url", help="only time the queries, against this filled database")
    parser.add_argument("--writer-only", action="store_true", help="only time the ingest's writer, on SQLite")
    parser.add_argument("--ingest-only", action="store_true", help="only time the MQTT ingest")
    parser.add_argument("--store-only", action="store_true", help="only time MqttIngest.store, on SQLite")
    parser.add_argument("--poison", type=int, default=0, help="windows with an out-of-range time among the messages")
    args = parser.parse_args()
    if args.store_only:
        rates = bench_store(args)
        print(f"MqttIngest.store, SQLite, {args.messages} messages ({args.poison} poison) per round: "
              f"{' '.join(f'{r:.0f}' for r in rates)} msg/s; median {statistics.median(rates):.0f}; "
              f"load average {os.getloadavg()[0]:.1f}")
        return
    if args.writer_only:
        rates = bench_writer(args)
        print(f"writer alone, SQLite, {args.messages} messages per round: "
              f"{' '.join(f'{r:.0f}' for r in rates)} msg/s; median {statistics.median(rates):.0f}; "
              f"load average {os.getloadavg()[0]:.1f}")
        return
    if args.database_url:
        _queries_only(args)
        return

    results = {}
    for backend in args.backends.split(","):
        pg = Postgres().start() if backend == "postgresql" else None
        broker = EmbeddedBroker(Path(tempfile.mkdtemp(prefix="bench-broker-")), secure=False).start()
        server = start_registry(Path(tempfile.mkdtemp(prefix="bench-registry-")) / "data", broker.url,
                                pg.url if pg else None)
        try:
            _upload_models(server)
            _register_agents(server, args)
            ingest = bench_ingest(server, broker, args)
            print(f"[{backend}] ingest: {ingest}", flush=True)
            if args.ingest_only:
                results[backend] = (ingest, {})
                continue
            server.stop()  # the query database holds exactly agents x reports rows
            server = start_registry(Path(tempfile.mkdtemp(prefix="bench-registry-")) / "data", None,
                                    _fresh(pg) if pg else None)
            _upload_models(server)
            fill_s = fill(server, args)
            print(f"[{backend}] filled {args.agents * args.reports} rows in {fill_s:.1f} s", flush=True)
            if pg:
                _settle(server)
            results[backend] = (ingest, bench_queries(server, args))
        finally:
            server.stop()
            broker.stop()
            if pg:
                pg.stop()

    print(f"\nmachine: 2-core x86-64 CPU, shared; load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}; "
          f"{args.agents} agents, each its own MQTT connection, in {args.publishers} processes; ingest {args.messages} "
          f"messages; queries over {args.agents} x {args.reports} rows\n")
    print("| backend | published | stored | ingest rate (msg/s) | publish s | ingest s | load average after |")
    print("|---|---|---|---|---|---|---|")
    for backend, (ingest, _) in results.items():
        print(f"| {backend} | {ingest['published']} | {ingest['stored']} | {ingest['rate']:.0f} | "
              f"{ingest['publish_s']:.1f} | {ingest['ingest_s']:.1f} | {ingest['load_average_1min']:.1f} |")
    print(f"\n| query ({args.repeat} runs over HTTP) | " + " | ".join(f"{b} p50 / p95 ms" for b in results) + " |")
    print("|---|" + "---|" * len(results))
    for name in next(iter(results.values()))[1]:
        print(f"| {name} | " + " | ".join(f"{q[name][0]:.1f} / {q[name][1]:.1f}" for _, q in results.values()) + " |")


def _register_agents(server, args) -> None:
    """The publishing agents, registered at their sites and assigned the model each reports: the registry stores
    only a sender's own site and assigned models."""
    from edgejoule.registry import service
    from edgejoule.schemas.api import AgentRegistration

    with server.server.config.app.state.sessions.begin() as session:
        for agent in range(args.agents):
            site = SITES[agent % len(SITES)]
            service.register_agent(session, AgentRegistration(agent_id=f"bs-{agent:04d}", site=site))
        session.flush()
        for m in range(MODELS_PER_SITE):
            for s, site in enumerate(SITES):
                reporting = [f"bs-{a:04d}" for a in range(args.agents)
                             if a % len(SITES) == s and a % MODELS_PER_SITE == m]
                if reporting:
                    service.deploy(session, site, f"{site}-m{m}", agents=reporting)


def _upload_models(server) -> None:
    with server.admin() as admin:
        for site in SITES:
            for m in range(MODELS_PER_SITE):
                if admin.get(f"/models/{site}-m{m}/manifest").status_code == 404:
                    upload(admin, *package(f"{site}-m{m}", site=site, energy_uj=10.0 * (m + 1))).raise_for_status()


def _queries_only(args) -> None:
    server = start_registry(Path(tempfile.mkdtemp(prefix="bench-registry-")) / "data", None, args.database_url)
    try:
        _upload_models(server)
        queries = bench_queries(server, args)
    finally:
        server.stop()
    print(f"\nmachine: 2-core x86-64 CPU, shared; load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}; "
          f"queries over {args.agents} x {args.reports} rows of {args.database_url.split(':')[0]}\n")
    print(f"| query ({args.repeat} runs over HTTP) | p50 / p95 ms |\n|---|---|")
    for name, (p50, p95) in queries.items():
        print(f"| {name} | {p50:.1f} / {p95:.1f} |")


def _fresh(pg: Postgres) -> str:
    from tests.postgres import fresh_database

    return fresh_database(pg)


if __name__ == "__main__":
    main()
