"""The hourly roll-up against the reports themselves, on SQLite and PostgreSQL 15: fleet and series answers
for windows that cut hours (read from whole roll-up hours plus raw edge rows) equal the answers computed
from the messages sent through the real ingest (HTTP, duplicates included); migration 0003 builds the same
roll-up from reports stored before it existed."""

from __future__ import annotations

import random
import threading
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest
from alembic import command
from sqlalchemy import column, create_engine, event, func, insert, inspect, select, table, text

from edgejoule.registry import fleet as fleet_queries
from edgejoule.registry import service
from edgejoule.registry.db import ROLLUP_LEVELS, TelemetryRow, TelemetrySeriesRow, make_engine, session_factory
from edgejoule.registry.migrate import alembic_config, upgrade
from edgejoule.registry.schemas import utc
from tests.fleet import start_registry
from tests.postgres import database_url, fresh_database, postgres_server  # noqa: F401 (fixtures)
from tests.registry_parts import T0, package, send, upload, window

QUALITY_METRICS_0002 = table("quality_metrics", column("name"))  # the metric names the registry kept from 0002 to 0005
AGENTS = {"bs-1": ("urban-nlos", "rapl"), "bs-2": ("urban-nlos", "ina219"), "bs-3": ("campus-los", "rapl")}
MODELS = ("m1", "m2", None)


def reports(n: int = 240, seed: int = 1) -> list:
    """Windows over about five hours ending at odd seconds, mixed models and the fallback, two meters, a
    metric only some windows report, estimates only some carry."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        agent = rng.choice(sorted(AGENTS))
        site, meter = AGENTS[agent]
        model = rng.choice(MODELS)
        quality = {"sum_rate": rng.uniform(8, 12)} | ({"ber": rng.uniform(0, 0.01)} if i % 3 else {})
        w = window(agent, model, 0, inferences=rng.randint(1, 500), energy_uj=rng.uniform(10, 90),
                   p95_ms=rng.uniform(0.5, 3), site=site, quality=quality, fallback="zf" if model is None else None)
        end = T0 + timedelta(seconds=rng.randint(0, 5 * 3600))
        out.append(w.model_copy(update={
            "window_start": end - timedelta(seconds=30), "window_end": end, "meter": meter,
            "meter_kind": "estimated" if meter == "rapl" and i % 5 == 0 else "measured",
            "estimated_energy_uj": None if i % 4 == 0 else rng.uniform(5, 20)}))
    return out


def expected(messages: list, keys: tuple[str, ...], since=None, until=None, **filters) -> dict[tuple, dict]:
    """What a fleet query must answer, from the messages themselves."""
    groups: dict[tuple, list] = defaultdict(list)
    since, until = (None if t is None else utc(t) for t in (since, until))
    for m in messages:
        if (since is None or m.window_end >= since) and (until is None or m.window_end <= until) \
                and all(getattr(m, k) == v for k, v in filters.items() if v is not None):
            groups[tuple(getattr(m, k) for k in keys)].append(m)
    out = {}
    for key, ms in groups.items():
        n = sum(m.inferences for m in ms)
        estimates = [m.estimated_energy_uj for m in ms if m.estimated_energy_uj is not None]
        names = {name for m in ms for name in m.quality}
        out[key] = {"windows": len(ms), "inferences": n,
                    "energy_total_uj": sum(m.energy_total_uj * m.inferences for m in ms) / n,
                    "energy_dynamic_uj": sum(m.energy_dynamic_uj * m.inferences for m in ms) / n,
                    "latency_ms_p50": sum(m.latency_ms_p50 * m.inferences for m in ms) / n,
                    "latency_ms_p95": sum(m.latency_ms_p95 * m.inferences for m in ms) / n,
                    "estimated_energy_uj": sum(estimates) / len(estimates) if estimates else None,
                    "quality": {name: sum(m.quality[name] * m.inferences for m in ms if name in m.quality)
                                / sum(m.inferences for m in ms if name in m.quality) for name in names},
                    "meters": sorted({f"{m.meter} ({m.meter_kind})" for m in ms})}
    return out


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


WINDOWS = [(None, None), (at(1.29), None), (None, at(3.61)), (at(0.5), at(4.25)), (at(1), at(3)),  # cut and whole hours
           (at(2.1), at(2.8)), (at(1.9), at(2.1)), (at(1), at(1)),  # inside one hour, across one boundary, empty
           (at(1.25), at(2.75)), (at(2.01), at(2.07)),  # on 5-minute boundaries; inside one 5-minute bucket
           (at(3), at(2)),  # ends before it starts: nothing
           (at(1.29).astimezone(timezone(timedelta(hours=2))), at(3.61).replace(tzinfo=None))]  # other zone, naive UTC


def assert_same(answer: list[dict], truth: dict[tuple, dict], keys: tuple[str, ...]) -> None:
    got = {tuple(r[k] for k in keys): r for r in answer}
    assert set(got) == set(truth)
    assert list(got) == sorted(got, key=lambda key: [(v is not None, v or "") for v in key])  # key order, None first
    for key, want in truth.items():
        row = got[key]
        assert (row["windows"], row["inferences"], row["meters"]) == (want["windows"], want["inferences"], want["meters"])
        for field in ("energy_total_uj", "energy_dynamic_uj", "latency_ms_p50", "latency_ms_p95", "estimated_energy_uj"):
            assert row[field] == (want[field] if want[field] is None else pytest.approx(want[field], rel=1e-9)), (key, field)
        assert row["quality"] == pytest.approx(want["quality"], rel=1e-9)


def check_fleet(session, messages: list) -> None:
    for since, until in WINDOWS:
        for group_by, keys in fleet_queries.GROUPINGS.items():
            answer = fleet_queries.fleet(session, group_by, since=since, until=until)
            assert_same(answer, expected(messages, keys, since, until), keys)
        one = fleet_queries.fleet(session, "agent", agent_id="bs-2", model_id="m1", since=since, until=until)
        assert_same(one, expected(messages, ("site", "model_id", "agent_id"), since, until, agent_id="bs-2",
                                  model_id="m1"), ("site", "model_id", "agent_id"))


def test_rollup_answers_equal_the_reports_for_windows_that_cut_hours(tmp_path, database_url):
    messages = reports()
    server = start_registry(tmp_path / "data", None, database_url)
    try:
        with server.admin() as admin:
            for model in ("m1", "m2"):
                upload(admin, *package(model)).raise_for_status()
            for m in messages + messages[::7]:  # the HTTP fallback path, replays included
                assert send(admin, "/telemetry", m).status_code == 202
            assert admin.get("/fleet", params={"group_by": "site", "since": at(1.29).isoformat()}).status_code == 200
            ecal = admin.get("/models/m1/ecal").json()
        assert ecal["inferences"] == sum(m.inferences for m in messages if m.model_id == "m1")
        sessions = session_factory(make_engine(database_url))
        with sessions() as session:
            check_fleet(session, messages)
            for bucket_s in (3600, 7200, 600, 420):  # from both levels, from the 5-minute one, from raw rows only
                for since, until in WINDOWS[:4]:
                    answer = fleet_queries.series(session, bucket_s, since=since, until=until)
                    bucketed = [m.model_copy(update={"site": f"{m.site}|{_bucket(m.window_end, bucket_s)}"})
                                for m in messages]
                    truth = {(site.split("|")[0], model, int(site.split("|")[1])): v for (site, model), v
                             in expected(bucketed, ("site", "model_id"), since, until).items()}
                    for row in answer:
                        row["meters"] = truth[(row["site"], row["model_id"], row["bucket_start"])]["meters"]
                    assert_same(answer, truth, ("site", "model_id", "bucket_start"))
            hours, fives = (session.scalar(select(func.count()).select_from(level.sums)) for level in ROLLUP_LEVELS)
            assert 0 < hours < fives <= len(messages)  # each level is smaller than the one below it
    finally:
        server.stop()


def _bucket(moment: datetime, bucket_s: int) -> int:
    return int(moment.timestamp()) // bucket_s * bucket_s


def _bounds(condition) -> list[datetime]:
    """The times a raw-row condition compares window_end with, in order."""
    return sorted(condition.compile().params.values())


def test_a_window_reads_raw_reports_for_under_five_minutes_at_each_edge():
    """"The last hour" from 01:17:24: hour 2 onwards from the hourly level, 01:20-02:00 from the 5-minute level,
    and only 01:17:24-01:20 from raw reports; a window with no whole hour is 5-minute buckets and its closing
    instant; whole hours need no raw report but the closing instant; inside one 5-minute bucket all is raw."""
    hourly, five = ROLLUP_LEVELS
    epoch = int(T0.timestamp())
    buckets, raw = fleet_queries._plan(at(1.29), None)
    assert buckets == {hourly: [(epoch + 2 * 3600, None)], five: [(epoch + 80 * 60, epoch + 2 * 3600)]}
    assert _bounds(raw) == [at(1.29), T0 + timedelta(minutes=80)]
    buckets, raw = fleet_queries._plan(at(1.25), at(2.75))  # 01:15 - 02:45: no whole hour
    assert buckets == {five: [(epoch + 75 * 60, epoch + 165 * 60)]}
    assert _bounds(raw) == [at(2.75), at(2.75)]
    buckets, raw = fleet_queries._plan(at(1), at(3))
    assert buckets == {hourly: [(epoch + 3600, epoch + 3 * 3600)]} and _bounds(raw) == [at(3), at(3)]
    buckets, raw = fleet_queries._plan(at(2.01), at(2.07))
    assert buckets == {} and _bounds(raw) == [at(2.01), at(2.07)]


def test_a_duplicate_in_a_batch_or_across_batches_is_rolled_up_once(database_url):
    upgrade(database_url)
    sessions = session_factory(make_engine(database_url))
    first, second = reports(20, seed=2), reports(20, seed=3)
    with sessions.begin() as session:
        assert service.ingest_telemetry_batch(session, first + first[:5]) == 20
    with sessions.begin() as session:
        assert service.ingest_telemetry_batch(session, first[10:] + second) == 20
    with sessions() as session:
        check_fleet(session, first + second)


def test_migrations_0003_to_0006_backfill_the_rollup_from_stored_reports(tmp_path, database_url):
    """A database at 0002 with reports in it (stored as the old registry did: raw rows and metric names) is upgraded;
    the streams (0006) and both roll-up levels must equal those the ingest builds, and the queries must answer as
    from the reports."""
    messages = reports(seed=4)
    command.upgrade(alembic_config(database_url), "0002")
    old = create_engine(database_url)
    with old.begin() as conn:
        conn.execute(insert(TelemetryRow.__table__), [service._telemetry_row(m) for m in messages])
        conn.execute(insert(QUALITY_METRICS_0002), [{"name": "ber"}, {"name": "sum_rate"}])
    old.dispose()
    upgrade(database_url)
    reference = f"sqlite:///{tmp_path / 'reference.db'}"
    upgrade(reference)
    with session_factory(make_engine(reference)).begin() as session:
        service.ingest_telemetry_batch(session, messages)
    tables = {}
    for url in (database_url, reference):
        with session_factory(make_engine(url))() as session:
            tables[url] = [sorted(map(tuple, session.execute(select(table.__table__)))) for table in
                           (TelemetrySeriesRow, *(t for level in ROLLUP_LEVELS for t in (level.sums, level.quality)))]
            check_fleet(session, messages)
    for backfilled, built in zip(tables[database_url], tables[reference]):
        assert len(backfilled) == len(built) > 0
        for a, b in zip(backfilled, built):
            assert [v for v in a if not isinstance(v, float)] == [v for v in b if not isinstance(v, float)]
            assert [v for v in a if isinstance(v, float)] == pytest.approx([v for v in b if isinstance(v, float)], rel=1e-9)


def test_two_writers_racing_on_the_same_messages_store_and_roll_them_up_once(database_url):
    """Two registry writers (the MQTT ingest's batch path, without a broker) get the same messages in opposite
    orders at once, as redelivery to two workers could: each window is stored and rolled up exactly once."""
    from prometheus_client import CollectorRegistry, Counter

    from edgejoule.registry.broker_passwords import BrokerPasswords
    from edgejoule.registry.ingest import MqttIngest
    from edgejoule.schemas import topics

    upgrade(database_url)
    _senders(database_url)
    messages = reports(300, seed=5)
    mqtt = [SimpleNamespace(topic=topics.telemetry(m.agent_id), payload=m.model_dump_json(by_alias=True).encode())
            for m in messages]
    writers, metrics_of = [], []
    for i in range(2):
        metrics = CollectorRegistry()
        counters = {"telemetry": Counter("t", "t", ["via"], registry=metrics), "duplicates": Counter("d", "d", registry=metrics),
                    "rejected_messages": Counter("r", "r", registry=metrics),
                    "foreign": Counter("f", "f", ["via"], registry=metrics)}
        metrics_of.append(metrics)
        writers.append(MqttIngest("mqtt://127.0.0.1:1", session_factory(make_engine(database_url)), counters,
                                  BrokerPasswords(bytes(16)),
                                  client_id=f"race-{i}"))
    orders = [mqtt, mqtt[::-1]]
    threads = [threading.Thread(target=lambda w=w, o=o: [w._store_or_retry(o[i:i + 50]) for i in range(0, len(o), 50)])
               for w, o in zip(writers, orders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    stored = [m.get_sample_value("t_total", {"via": "mqtt"}) or 0 for m in metrics_of]
    assert sum(stored) == len(messages)
    with session_factory(make_engine(database_url))() as session:
        assert session.scalar(select(func.count()).select_from(TelemetryRow)) == len(messages)
        check_fleet(session, messages)


def _senders(database_url: str) -> None:
    """The agents of ``reports`` registered at their sites, each assigned m1 after m2 (the ingest stores only a
    sender's own site and assigned models)."""
    from edgejoule.registry.db import AssignmentRow
    from edgejoule.schemas.api import AgentRegistration
    from edgejoule.schemas.manifest import ModelManifest

    with session_factory(make_engine(database_url)).begin() as session:
        for model_id in ("m2", "m1"):
            service.add_model(session, ModelManifest.model_validate_json(package(model_id)[0]))
        for agent, (site, _) in AGENTS.items():
            service.register_agent(session, AgentRegistration(agent_id=agent, site=site))
            session.add(AssignmentRow(agent_id=agent, model_id="m1", previous_model_id="m2"))


def _edge_scan_plan(session) -> str:
    """SQLite's plan for the raw-row scan of a window that cuts an hour (the statement fleet() sends)."""
    statements = []
    listen = event.listens_for(session.get_bind(), "before_cursor_execute")(
        lambda conn, cursor, statement, parameters, context, many: statements.append((statement, parameters)))
    fleet_queries.fleet(session, "agent", since=at(1.29))
    event.remove(session.get_bind(), "before_cursor_execute", listen)
    statement, parameters = next((s, p) for s, p in statements if "FROM telemetry " in s)
    return " ".join(row[-1] for row in session.connection().exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters))


def test_migration_0004_up_and_down_keeps_the_answers(database_url):
    """0004 on a database with reports: on SQLite the edge scan reads only the covering index, on PostgreSQL
    ``quality`` becomes jsonb; the fleet answers equal the reports' at the head, after going back to 0003 (which
    takes 0005's 5-minute level with it) and up again."""
    messages = reports(seed=6)
    config = alembic_config(database_url)
    command.upgrade(config, "0003")
    engine = make_engine(database_url)
    with engine.begin() as conn:  # as the 0003 registry stored them: raw rows, metric names, the roll-up
        conn.execute(insert(TelemetryRow.__table__), [service._telemetry_row(m) for m in messages])
        conn.execute(insert(QUALITY_METRICS_0002), [{"name": "ber"}, {"name": "sum_rate"}])
    engine.dispose()
    command.downgrade(config, "0002")  # 0003's upgrade backfills the roll-up from the rows
    command.upgrade(config, "0003")
    sqlite = database_url.startswith("sqlite")
    for revision, covered, quality_type in (("head", True, "jsonb"), ("0003", False, "json"), ("head", True, "jsonb")):
        (command.upgrade if revision == "head" else command.downgrade)(config, revision)
        engine = make_engine(database_url)
        tables = inspect(engine).get_table_names()
        assert ("telemetry_5min" in tables) == (revision == "head")
        if sqlite:
            indexes = {index["name"] for index in inspect(engine).get_indexes("telemetry")}
            assert ("ix_telemetry_window_end_covering" in indexes) == covered, indexes
            assert ("ix_telemetry_window_end" in indexes) != covered, indexes
        else:
            with engine.connect() as conn:
                assert conn.scalar(text("SELECT data_type FROM information_schema.columns WHERE "
                                        "table_name = 'telemetry' AND column_name = 'quality'")) == quality_type
        if revision == "head":
            with session_factory(engine)() as session:
                check_fleet(session, messages)
                if sqlite:
                    assert "COVERING INDEX ix_telemetry_window_end_covering" in _edge_scan_plan(session)
                    for table in ("telemetry_5min", "telemetry_5min_quality"):  # rows in the key's B-tree
                        assert session.scalar(text(f"SELECT sql FROM sqlite_master WHERE name = '{table}'")).strip().endswith(
                            "WITHOUT ROWID")
        engine.dispose()


def test_postgresql_sessions_plan_fleet_queries_serially_without_jit(postgres_server):
    """Parallel workers and JIT cost more than a fleet query itself (docs/REGISTRY.md): the registry's PostgreSQL
    sessions turn both off."""
    engine = make_engine(fresh_database(postgres_server))
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SHOW max_parallel_workers_per_gather").scalar() == "0"
        assert conn.exec_driver_sql("SHOW jit").scalar() == "off"
    engine.dispose()


def test_the_sqlite_writer_stores_times_and_quality_as_sqlalchemy_does(tmp_path):
    """The ingest writes raw rows with the driver's executemany, not SQLAlchemy's insert: the text of times and
    quality must be what SQLAlchemy writes, since window_end is compared as text by the fleet queries."""
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    upgrade(url)
    message = reports(1, seed=7)[0].model_copy(update={"window_end": at(1.2).astimezone(timezone(timedelta(hours=2)))})
    sessions = session_factory(make_engine(url))
    with sessions.begin() as session:
        service.ingest_telemetry_batch(session, [message])
        row = service._telemetry_row(message) | {"message_id": "via-sqlalchemy", "series_id": 1}
        session.execute(insert(TelemetryRow.__table__), [row])
    with sessions() as session:
        stored = session.connection().exec_driver_sql(
            "SELECT window_start, window_end, quality FROM telemetry ORDER BY message_id = 'via-sqlalchemy'").all()
    assert stored[0] == stored[1]
    assert stored[0][1] == at(1.2).strftime("%Y-%m-%d %H:%M:%S.%f")
