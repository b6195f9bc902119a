"""The funnel and the integration audit on a generated program of 10 000 partners, on PostgreSQL.

    .venv/bin/python bench/onboarding.py                      # 10 000 partners, 5 runs of each measurement
    .venv/bin/python bench/onboarding.py --partners 2000 --runs 3
    .venv/bin/python bench/onboarding.py --postgres postgresql://postgres@127.0.0.1:5432/postgres --keep

A temporary PostgreSQL database (created through the admin URL, migrated, dropped at the
end unless `--keep`) is filled with bulk `COPY`s: tiers, an API, three products with
plans, three agreements with requirements and versions, then for every partner a place
on the onboarding path drawn from a funnel-shaped distribution and the facts that go with
it: a team member (most partners), sandbox and production applications and credentials,
subscriptions (a few above the partner's tier), acceptances, stage transitions and the
`partner_onboarding` row, first calls, and per-day usage rows (a request row and a metric
row) for up to 90 days. The generator keeps what the reports must answer, and the run
checks the reports against it: the funnel's counts per stage and the partners per flag.

Then each report is timed `--runs` times, through the service (a fresh session each time)
and over HTTP (the control plane under uvicorn in this process, with an admin token):
`GET /admin/api/funnel`, `GET /admin/api/integration-audit` (a page; a page filtered by a
flag) and both exports of the whole audit. The generated rows are dropped from memory
before (the server's process does not hold them). Each figure is wall-clock (median, max,
min) plus the median CPU time of this process (server and client both run here): on a
shared machine the wall clock also counts the other processes. Prints a table and writes
`bench/results-onboarding.json`. Target: every report within one second. Not a test.
"""
from __future__ import annotations

import argparse
import asyncio
import enum
import gc
import json
import platform
import random
import statistics
import sys
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg.types.json import Json

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SECRET_KEY = "accord-bench-secret-key-not-for-production"
PATH = ["registered", "terms_accepted", "sandbox_access", "first_sandbox_call", "production_requested",
        "production_approved", "live", "active"]
# Where partners are: a funnel (most stop early, a quarter is active).
DEPTH_WEIGHTS = [10, 10, 15, 15, 5, 5, 15, 25]
RESULTS = ROOT / "bench" / "results-onboarding.json"


# --- bulk loading ------------------------------------------------------------------------------------

class Loader:
    """Rows per table, written with COPY; columns left out get the model's default."""

    def __init__(self) -> None:
        from accord.core.models import metadata

        self.metadata = metadata
        self.rows: dict[str, list[dict[str, Any]]] = {}

    def add(self, table: str, **values: Any) -> dict[str, Any]:
        columns = self.metadata.tables[table].c
        if "id" in columns and "id" not in values and columns["id"].default is not None:
            values["id"] = uuid.uuid4()
        self.rows.setdefault(table, []).append(values)
        return values

    @staticmethod
    def _value(value: Any) -> Any:
        if isinstance(value, enum.Enum):
            return value.value
        if isinstance(value, (dict, list)):
            return Json(value)
        return value

    def _default(self, column: Any) -> Any:
        default = column.default
        if default is None:
            return None
        if default.is_scalar:
            return default.arg
        return default.arg(None)

    def copy(self, connection: psycopg.Connection, order: list[str]) -> dict[str, int]:
        counts = {}
        for name in order:
            rows = self.rows.get(name, [])
            if not rows:
                continue
            table = self.metadata.tables[name]
            columns = [c for c in table.c if c.identity is None]
            with connection.cursor() as cursor:
                names = ", ".join(f'"{c.name}"' for c in columns)
                with cursor.copy(f'COPY "{name}" ({names}) FROM STDIN') as copy:
                    for row in rows:
                        copy.write_row([self._value(row[c.name]) if c.name in row else self._value(self._default(c))
                                        for c in columns])
            counts[name] = len(rows)
        return counts


# --- the generated program -----------------------------------------------------------------------------

class Program:
    """Generates the program and remembers what the reports must say about it."""

    def __init__(self, partners: int, seed: int, now: datetime) -> None:
        self.count = partners
        self.random = random.Random(seed)
        self.now = now
        self.load = Loader()
        self.expected_current: Counter[str] = Counter()
        self.expected_reached: Counter[str] = Counter()
        self.expected_status: Counter[str] = Counter()
        self.expected_flags: Counter[str] = Counter()
        self.apps: dict[tuple[uuid.UUID, str], uuid.UUID] = {}

    def drop_rows(self) -> None:
        self.load.rows.clear()
        self.apps.clear()
        gc.collect()

    def ago(self, days: float) -> datetime:
        return self.now - timedelta(days=days)

    def build(self) -> None:
        add = self.load.add
        self.tiers = {slug: add("tiers", name=slug.title(), slug=slug, rank=rank)
                      for slug, rank in (("registered", 10), ("silver", 20), ("gold", 30), ("platinum", 40))}
        api = add("apis", name="Maps", slug="maps", path_prefix="/maps", visibility="partner",
                  production_upstream_url="http://127.0.0.1:9/")
        self.metric = add("metrics", api_id=api["id"], system_name="hits", friendly_name="Hits")
        public = add("products", name="Starter", slug="starter", visibility="public")
        partner = add("products", name="Pro", slug="pro", visibility="partner")
        for product in (public, partner):
            add("product_apis", product_id=product["id"], api_id=api["id"])
        self.starter = add("plans", product_id=public["id"], name="Starter", slug="starter")
        self.pro = add("plans", product_id=partner["id"], name="Pro", slug="pro")
        self.pro_gold = add("plans", product_id=partner["id"], name="Pro Gold", slug="pro-gold",
                            min_tier_id=self.tiers["gold"]["id"])
        for position, key in enumerate(PATH, start=1):
            add("onboarding_stages", key=key, name=key.replace("_", " ").capitalize(), position=position * 10,
                kind="builtin", stuck_after_days={"registered": 7, "terms_accepted": 7, "sandbox_access": 7,
                                                  "first_sandbox_call": 14, "production_approved": 14}.get(key))
        terms = add("agreements", slug="terms", title="Partner terms")
        self.terms_v1 = add("agreement_versions", agreement_id=terms["id"], number=1, body="v1", material=True,
                            grace_days=30, published_at=self.ago(400), effective_at=self.ago(400))
        self.terms_v2 = add("agreement_versions", agreement_id=terms["id"], number=2, body="v2", material=True,
                            grace_days=30, published_at=self.ago(20), effective_at=self.ago(20))
        add("agreement_requirements", agreement_id=terms["id"], scope="stage", stage_key="terms_accepted",
            created_at=self.ago(400))
        sharing = add("agreements", slug="data-sharing", title="Data sharing agreement")
        self.sharing_v1 = add("agreement_versions", agreement_id=sharing["id"], number=1, body="v1", material=True,
                              grace_days=14, published_at=self.ago(400), effective_at=self.ago(400))
        add("agreement_requirements", agreement_id=sharing["id"], scope="product", product_id=partner["id"],
            created_at=self.ago(400))
        for n in range(self.count):
            self.partner(n)

    def partner(self, n: int) -> None:
        add, rnd = self.load.add, self.random
        tier = rnd.choice(["registered", "silver", "silver", "gold", "platinum"])
        age = rnd.uniform(2, 365)
        created = self.ago(age)
        p = add("partners", name=f"Partner {n:05d}", slug=f"partner-{n:05d}", status="active", audience="partner",
                type=rnd.choice(["technology", "agency", "reseller", "developer"]), tier_id=self.tiers[tier]["id"],
                created_at=created, updated_at=created)
        pid = p["id"]
        if rnd.random() < 0.95:
            user = add("users", email=f"admin@partner-{n:05d}.example", name=f"Admin {n}", password_hash=None)
            add("memberships", partner_id=pid, user_id=user["id"], role="partner-admin")
        else:
            self.expected_flags["no-active-member"] += 1
        depth = rnd.choices(range(len(PATH)), weights=DEPTH_WEIGHTS)[0]
        moments = sorted(created + (self.now - timedelta(hours=1) - created) * rnd.random() for _ in range(depth))
        at = dict(zip(PATH, [created, *moments]))
        previous = None
        for stage in PATH[:depth + 1]:
            add("stage_transitions", partner_id=pid, from_stage=previous, to_stage=stage, at=at[stage],
                recorded_at=at[stage], cause="bench", actor="system")
            previous = stage
        status, status_since = "progressing", at[PATH[depth]]
        last_call: datetime | None = None
        if depth >= PATH.index("live") and rnd.random() < 0.25 and (self.now - at["live"]).days > 35:
            status = "inactive"
            status_since = max(at[PATH[depth]], self.ago(rnd.uniform(1, 5)))
            add("stage_transitions", partner_id=pid, from_stage=PATH[depth], to_stage="inactive", at=status_since,
                recorded_at=status_since, cause="bench", actor="system")
        self.expected_status[status] += 1
        if status == "progressing":
            self.expected_current[PATH[depth]] += 1
        for stage in PATH[:depth + 1]:
            self.expected_reached[stage] += 1

        # Facts that go with the stage.
        if depth >= 1:
            self.accept(pid, self.terms_v1, at["terms_accepted"])
            if rnd.random() < 0.3 and self.terms_v2["published_at"] < self.now - timedelta(days=1):
                self.accept(pid, self.terms_v2, self.ago(rnd.uniform(0, 19)))
        working_since: datetime | None = None
        stale = False
        subscribed_since: datetime | None = None
        if depth >= 2:
            since = at["sandbox_access"]
            add("subscriptions", partner_id=pid, product_id=self.starter["product_id"], plan_id=self.starter["id"],
                state="active", activated_at=since, created_at=since)
            subscribed_since = since
            credential = self.app(pid, "sandbox", since, at.get("first_sandbox_call"))
            working_since = since
            if depth >= 3:
                last_call = credential["last_used_at"] = self.usage(pid, "sandbox", at["first_sandbox_call"], days=3)
            stale |= self.stale(credential)
        integrated = working_since is not None
        if depth >= 5:
            since = at["production_approved"]
            above = tier in {"registered", "silver"} and rnd.random() < 0.1
            plan = self.pro_gold if above else self.pro
            add("subscriptions", partner_id=pid, product_id=plan["product_id"], plan_id=plan["id"], state="active",
                activated_at=since, created_at=since)
            if above:
                self.expected_flags["above-tier"] += 1
            if rnd.random() < 0.85:
                self.accept(pid, self.sharing_v1, since)
            else:  # bound by the product's agreement, long past its grace days, with an integration
                self.expected_flags["missing-agreement"] += 1
            live = at.get("live")
            credential = self.app(pid, "production", since, live)
            if depth >= 6:
                until = status_since - timedelta(days=31) if status == "inactive" else self.now
                production_call = credential["last_used_at"] = self.usage(pid, "production", live, until=until)
                last_call = max(filter(None, (production_call, last_call)), default=None)
            stale |= self.stale(credential)
        if stale:
            self.expected_flags["stale-credential"] += 1
        if integrated and subscribed_since is not None and working_since is not None:
            access_since = max(working_since, subscribed_since)
            quiet_since = self.now - timedelta(days=30)
            if access_since < quiet_since and (last_call is None or last_call < quiet_since):
                self.expected_flags["no-traffic"] += 1
        add("partner_onboarding", partner_id=pid, stage_key=PATH[depth], stage_entered_at=at[PATH[depth]],
            status=status, status_since=status_since, last_call_at=last_call)

    def accept(self, partner_id: uuid.UUID, version: dict[str, Any], at: datetime) -> None:
        self.load.add("agreement_acceptances", agreement_id=version["agreement_id"], version_id=version["id"],
                      partner_id=partner_id, accepted_by="bench", accepted_at=at, recorded_at=at, source="staff")

    def stale(self, credential: dict[str, Any]) -> bool:
        return (credential.get("last_used_at") or credential["created_at"]) < self.now - timedelta(days=90)

    def app(self, partner_id: uuid.UUID, environment: str, created: datetime,
            first_call: datetime | None) -> dict[str, Any]:
        """A live application with one credential (returned, so its use can be set)."""
        app = self.load.add("applications", partner_id=partner_id, name=f"{environment} app", environment=environment,
                            state="live", app_id=uuid.uuid4().hex[:24], created_at=created)
        prefix = "acc_test_" if environment == "sandbox" else "acc_live_"
        credential = self.load.add("credentials", application_id=app["id"], name="default", prefix=prefix,
                                   key_hash=uuid.uuid4().hex + uuid.uuid4().hex, last4="abcd", created_at=created,
                                   last_used_at=None)
        if first_call is not None:
            self.load.add("first_calls", application_id=app["id"], partner_id=partner_id, api_id=None,
                          environment=environment, at=first_call)
        self.apps[(partner_id, environment)] = app["id"]
        return credential

    def usage(self, partner_id: uuid.UUID, environment: str, start: datetime, *, days: int = 90,
              until: datetime | None = None) -> datetime | None:
        """One request row and one metric row per day from `start` (at most `days`, the last 90 before
        `until`); the last minute written."""
        until = min(until or self.now, self.now)
        first = max(start, until - timedelta(days=90))
        last = None
        day = 0
        application_id = self.apps[(partner_id, environment)]
        while day < days:
            minute = (first + timedelta(days=day)).replace(second=0, microsecond=0)
            if minute > until:
                break
            calls = self.random.randint(1, 500)
            for metric_id in (None, self.metric["id"]):
                self.load.add("usage_counts", bucket_key=uuid.uuid4().hex, minute=minute, partner_id=partner_id,
                              application_id=application_id, api_id=self.metric["api_id"], metric_id=metric_id,
                              environment=environment, status_class="2xx", denial="", count=calls, units=calls,
                              latency_ms_sum=calls * 12.5, latency_ms_max=80.0)
            last = minute
            day += 1
        return last


ORDER = ["tiers", "apis", "metrics", "products", "product_apis", "plans", "onboarding_stages", "agreements",
         "agreement_versions", "agreement_requirements", "partners", "users", "memberships", "subscriptions",
         "applications", "credentials", "agreement_acceptances", "stage_transitions", "partner_onboarding",
         "first_calls", "usage_counts"]


# --- measuring ---------------------------------------------------------------------------------------

async def timed(runs: int, call: Any) -> tuple[dict[str, float], Any]:
    """Wall-clock figures, and the process's CPU time (the server runs in this process): on a shared
    machine the wall clock also counts other processes, the CPU time only ours."""
    times, cpu, result = [], [], None
    for _ in range(runs):
        result = None  # the previous answer is freed outside the measurement
        started, cpu_started = time.perf_counter(), time.process_time()
        result = await call()
        times.append((time.perf_counter() - started) * 1000)
        cpu.append((time.process_time() - cpu_started) * 1000)
    return {"median_ms": round(statistics.median(times), 1), "max_ms": round(max(times), 1),
            "min_ms": round(min(times), 1), "cpu_median_ms": round(statistics.median(cpu), 1)}, result


async def measure(database_url: str, runs: int, program: Program) -> dict[str, Any]:
    import httpx
    import uvicorn

    from accord.app import create_app
    from accord.auth.actor import CLI_ACTOR
    from accord.auth.service import create_admin_token
    from accord.core.clock import clock
    from accord.core.config import Settings
    from accord.core.db import create_engine, session_factory, session_scope
    from accord.core.pagination import PageParams
    from accord.funnel import service as funnel
    from accord.integrations import service as audit
    from accord.integrations.schemas import Flag
    from accord.users.models import StaffRole

    # The reports' clock is the generator's: what it expects stays true however long the run takes.
    clock.freeze(program.now)
    settings = Settings(database_url=database_url, secret_key=SECRET_KEY)
    engine = create_engine(database_url)
    factory = session_factory(engine)
    async with session_scope(factory) as session:
        _, token = await create_admin_token(session, SECRET_KEY, CLI_ACTOR, name="bench", role=StaffRole.owner)

    async def in_session(work: Any) -> Any:
        async with factory() as session:
            return await work(session)

    service: dict[str, Any] = {}
    service["funnel"], report = await timed(runs, lambda: in_session(lambda s: funnel.funnel(s)))
    service["audit_page"], page = await timed(runs, lambda: in_session(
        lambda s: audit.audit_page(s, settings, PageParams(limit=50, offset=0))))
    service["audit_page_flag"], _ = await timed(runs, lambda: in_session(
        lambda s: audit.audit_page(s, settings, PageParams(limit=50, offset=0), flag=Flag.no_traffic)))
    service["audit_all"], everything = await timed(runs, lambda: in_session(lambda s: audit.audit_all(s, settings)))
    audit_rows = len(everything)
    del everything  # half a million objects: not kept in the heap for the measurements that follow

    app = create_app(settings, engine)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    http: dict[str, Any] = {}
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60,
                                     headers={"Authorization": f"Bearer {token}"}) as client:
            async def get(path: str, **params: Any) -> httpx.Response:
                response = await client.get(path, params=params)
                response.raise_for_status()
                return response

            await get("/admin/api/funnel")  # warm-up, not timed: a fresh server's first request sets up its pool
            http["funnel"], _ = await timed(runs, lambda: get("/admin/api/funnel"))
            http["audit_page"], _ = await timed(runs, lambda: get("/admin/api/integration-audit"))
            http["audit_page_flag"], _ = await timed(runs, lambda: get("/admin/api/integration-audit",
                                                                      flag="stale-credential"))
            http["export_json"], exported = await timed(runs, lambda: get("/admin/api/integration-audit/export.json"))
            exported_rows = len(json.loads(exported.text))
            del exported
            http["export_csv"], _ = await timed(runs, lambda: get("/admin/api/integration-audit/export.csv"))
    finally:
        server.should_exit = True
        await task
        await engine.dispose()
        clock.resume()

    checks = {
        "funnel_partners": report.partners == program.count,
        "funnel_current": {s.key: s.current for s in report.stages} == {k: program.expected_current[k] for k in PATH},
        "funnel_reached": {s.key: s.reached for s in report.stages} == {k: program.expected_reached[k] for k in PATH},
        "funnel_inactive": report.inactive == program.expected_status["inactive"],
        "audit_rows": audit_rows == program.count and exported_rows == program.count,
        "audit_flags": {k: page.flag_counts[k] for k in program.expected_flags} == dict(program.expected_flags),
    }
    return {"service": service, "http": http, "checks": checks,
            "flag_counts": page.flag_counts, "expected_flags": dict(program.expected_flags),
            "stages": {s.key: {"current": s.current, "reached": s.reached,
                               "median_days": round(s.time_in_stage.median_seconds / 86400, 2)
                               if s.time_in_stage.median_seconds is not None else None}
                       for s in report.stages}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--partners", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres", metavar="ADMIN_URL")
    parser.add_argument("--keep", action="store_true", help="keep the generated database (its URL is printed)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()

    from accord.core import migrate
    from accord.core.clock import utcnow

    name = f"accord_bench_onboarding_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.postgres, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    database_url = args.postgres.rsplit("/", 1)[0] + f"/{name}"
    try:
        migrate.upgrade(database_url)
        started = time.perf_counter()
        program = Program(args.partners, args.seed, utcnow())
        program.build()
        generated = time.perf_counter() - started
        started = time.perf_counter()
        with psycopg.connect(database_url) as conn:
            counts = program.load.copy(conn, ORDER)
            conn.commit()
            conn.autocommit = True
            conn.execute("ANALYZE")
        # The generated rows (a million objects) are in the database now: dropped, so the reports are
        # measured in a process like the server's, not one whose collector walks them too.
        program.drop_rows()
        loaded = time.perf_counter() - started
        print(f"generated {args.partners} partners in {generated:.1f} s, loaded in {loaded:.1f} s: "
              + ", ".join(f"{table} {n}" for table, n in counts.items()), flush=True)
        result = asyncio.run(measure(database_url, args.runs, program))
    finally:
        if args.keep:
            print(f"kept the database: {database_url}")
        else:
            with psycopg.connect(args.postgres, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    result = {"partners": args.partners, "runs": args.runs, "rows": counts, "database": "postgresql",
              "machine": f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}",
              "measured_at": datetime.now(UTC).isoformat(timespec="seconds"), **result}
    print(f"\n{'report':<34}{'service median':>16}{'max':>10}{'(cpu)':>10}{'HTTP median':>14}{'max':>10}{'(cpu)':>10}")
    for key, label in (("funnel", "funnel"), ("audit_page", "audit, first page"),
                       ("audit_page_flag", "audit, page filtered by a flag"), ("audit_all", "audit, everything"),
                       ("export_json", "audit export.json"), ("export_csv", "audit export.csv")):
        cells = []
        for figures in (result["service"].get(key), result["http"].get(key)):
            cells += [f"{figures['median_ms']} ms", f"{figures['max_ms']} ms", f"{figures['cpu_median_ms']} ms"] \
                if figures else ["", "", ""]
        print(f"{label:<34}{cells[0]:>16}{cells[1]:>10}{cells[2]:>10}{cells[3]:>14}{cells[4]:>10}{cells[5]:>10}")
    print("checks: " + ", ".join(f"{k} {'ok' if v else 'FAILED'}" for k, v in result["checks"].items()))
    print(f"flags: {result['flag_counts']} (expected {result['expected_flags']})")
    args.output.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
