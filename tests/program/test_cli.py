"""`accord apply`, `accord export` and `accord partners import` as a user runs them: real processes,
a committed database of the test's own, on SQLite and PostgreSQL."""
from __future__ import annotations

import re
from pathlib import Path

import yaml

from accord.core.security import keyed_hash
from accord.program.document import load_document
from tests.conftest import TEST_SECRET
from tests.program.helpers import DEMO, accord, count, query, write

SECRET = re.compile(r"acc_(?:test|live)_[A-Za-z0-9]{40}")

SMALL_PROGRAM = """
apis:
  - slug: maps
    name: Maps API
    path_prefix: /maps
    visibility: public
    upstreams: {production: "http://127.0.0.1:9000"}
    metrics: [{name: geocode, friendly_name: Geocode}]
    mapping_rules: [{method: GET, pattern: /geocode, metric: geocode}]
  - slug: weather
    name: Weather API
    path_prefix: /weather
    visibility: partner
products:
  - slug: maps
    name: Maps
    visibility: public
    apis: [maps]
    plans:
      - slug: basic
        name: Basic
        limits: [{api: maps, metric: geocode, period: day, value: 1000}]
"""


async def test_apply_demo_export_round_trips_and_a_second_apply_changes_nothing(
        fresh_database_url: str, tmp_path: Path) -> None:
    applied = await accord("apply", "-f", str(DEMO), database=fresh_database_url)
    assert applied.returncode == 0, applied.stderr
    assert "+ create api social" in applied.stdout and "+ create partner acme-analytics" in applied.stdout
    secrets = SECRET.findall(applied.stdout)
    assert len(secrets) == 4  # one per declared credential, printed whole, once
    stored = {row[0] for row in await query(fresh_database_url, "SELECT key_hash FROM credentials")}
    assert {keyed_hash(s, TEST_SECRET) for s in secrets} == stored
    assert await count(fresh_database_url, "audit_entries") > 0
    actors = await query(fresh_database_url, "SELECT DISTINCT actor_kind, actor_label FROM audit_entries")
    assert actors == [("cli", "accord CLI")]

    again = await accord("apply", "-f", str(DEMO), database=fresh_database_url)
    assert again.returncode == 0, again.stderr
    assert "no changes" in again.stdout
    assert not SECRET.search(again.stdout)

    exported = await accord("export", database=fresh_database_url)
    assert exported.returncode == 0, exported.stderr
    assert yaml.safe_load(exported.stdout) == load_document(DEMO)

    export_file = write(tmp_path / "exported.yaml", exported.stdout)
    reapplied = await accord("apply", "-f", str(export_file), "--dry-run", database=fresh_database_url)
    assert reapplied.returncode == 0, reapplied.stderr
    assert "dry run: no changes" in reapplied.stdout

    to_file = await accord("export", "-o", str(tmp_path / "out.yaml"), database=fresh_database_url)
    assert to_file.returncode == 0 and (tmp_path / "out.yaml").read_text() == exported.stdout


async def test_dry_run_shows_the_changes_and_writes_nothing(fresh_database_url: str) -> None:
    dry = await accord("apply", "-f", str(DEMO), "--dry-run", database=fresh_database_url)
    assert dry.returncode == 0, dry.stderr
    assert "+ create plan social/trial" in dry.stdout
    assert "dry run: would make 55 to create; nothing was changed" in dry.stdout
    assert not SECRET.search(dry.stdout)  # no credential was really made
    for table in ("apis", "products", "partners", "credentials", "users", "audit_entries"):
        assert await count(fresh_database_url, table) == 0, table


async def test_a_broken_file_names_the_path_and_writes_nothing(fresh_database_url: str, tmp_path: Path) -> None:
    demo = DEMO.read_text()
    unknown_metric = write(tmp_path / "metric.yaml", demo.replace(
        "{api: social, metric: create_post, period: minute, value: 10}",
        "{api: social, metric: create_posts, period: minute, value: 10}"))
    bad_period = write(tmp_path / "period.yaml", demo.replace("period: month", "period: fortnight"))
    for path, where in ((unknown_metric, "products[0].plans[1].limits[4].metric: no metric 'create_posts'"),
                        (bad_period, "products[0].plans[0].limits[0].period")):
        result = await accord("apply", "-f", str(path), database=fresh_database_url)
        assert result.returncode == 1, result.stdout
        assert f"{path}: {where}" in result.stderr
        assert "nothing was changed" in result.stderr
    assert await count(fresh_database_url, "tiers") == 0


async def test_an_error_found_midway_rolls_back_everything_already_done(fresh_database_url: str,
                                                                        tmp_path: Path) -> None:
    # The product exposes only `geocode`, so the products service refuses a limit on `route`,
    # long after the tiers, APIs and product were written in the same transaction.
    program = write(tmp_path / "p.yaml", """
tiers: [{slug: basic, name: Basic, rank: 1}]
apis:
  - slug: maps
    name: Maps
    path_prefix: /maps
    visibility: public
    metrics: [{name: geocode}, {name: route}]
products:
  - slug: maps
    name: Maps
    visibility: public
    apis: [maps]
    methods: [maps.geocode]
    plans:
      - {slug: basic, name: Basic, limits: [{api: maps, metric: route, period: day, value: 5}]}
""")
    result = await accord("apply", "-f", str(program), database=fresh_database_url)
    assert result.returncode == 1
    assert "products[0].plans[0].limits[0].metric: 'route' is not among the product's selected methods" \
        in result.stderr
    for table in ("tiers", "apis", "metrics", "products", "plans", "audit_entries"):
        assert await count(fresh_database_url, table) == 0, table


async def test_prune_removes_an_api_deleted_from_the_file(fresh_database_url: str, tmp_path: Path) -> None:
    program = write(tmp_path / "program.yaml", SMALL_PROGRAM)
    assert (await accord("apply", "-f", str(program), database=fresh_database_url)).returncode == 0
    without_weather = SMALL_PROGRAM.split("  - slug: weather")[0] + "products:" + SMALL_PROGRAM.split("products:")[1]
    write(program, without_weather)

    kept = await accord("apply", "-f", str(program), database=fresh_database_url)
    assert kept.returncode == 0, kept.stderr
    assert "--prune would remove them" in kept.stdout and "- delete api weather" in kept.stdout
    assert await query(fresh_database_url, "SELECT slug FROM apis ORDER BY slug") == [("maps",), ("weather",)]

    pruned = await accord("apply", "-f", str(program), "--prune", database=fresh_database_url)
    assert pruned.returncode == 0, pruned.stderr
    assert "- delete api weather" in pruned.stdout and "applied: 1 to delete" in pruned.stdout
    assert await query(fresh_database_url, "SELECT slug FROM apis") == [("maps",)]
    assert await query(fresh_database_url, "SELECT actor_kind FROM audit_entries WHERE action = 'api.deleted'") \
        == [("cli",)]
    assert "no changes" in (await accord("apply", "-f", str(program), "--prune",
                                         database=fresh_database_url)).stdout


IMPORT_CSV = """name,slug,type,tier,audience,status,contact_name,contact_email,country,cf_region,api_key,api_key_environment,application
Globex Corporation,,reseller,Gold,partner,active,Hank Scorpio,hank@globex.example,US,americas,legacy-globex-live-0123456789,production,Globex live
Globex Corporation,,,,,,,,,,legacy-globex-second-key-0000,production,Globex live
Initech,initech,consulting,silver,partner,pending,Bill Lumbergh,bill@initech.example,DE,emea,acc_test_initechsandbox0000000001,,
Umbrella,umbrella,,,,,,,,,,,
"""

TIERS_AND_FIELDS = """
tiers:
  - {slug: silver, name: Silver, rank: 20}
  - {slug: gold, name: Gold, rank: 30}
custom_fields:
  - {target: partner, key: region, label: Region, type: choice, choices: [emea, americas, apac]}
"""


async def test_import_csv_stores_the_keys_keyed_hash_and_never_prints_them(fresh_database_url: str,
                                                                          tmp_path: Path) -> None:
    setup = write(tmp_path / "setup.yaml", TIERS_AND_FIELDS)
    assert (await accord("apply", "-f", str(setup), database=fresh_database_url)).returncode == 0
    csv_file = write(tmp_path / "partners.csv", IMPORT_CSV)
    keys = ["legacy-globex-live-0123456789", "legacy-globex-second-key-0000", "acc_test_initechsandbox0000000001"]

    dry = await accord("partners", "import", str(csv_file), "--dry-run", database=fresh_database_url)
    assert dry.returncode == 0, dry.stderr
    assert "+ create partner globex-corporation" in dry.stdout and "nothing was changed" in dry.stdout
    assert await count(fresh_database_url, "partners") == 0

    imported = await accord("partners", "import", str(csv_file), database=fresh_database_url)
    assert imported.returncode == 0, imported.stderr
    assert "3 partner(s) created" in imported.stdout and "3 key(s) imported" in imported.stdout
    for key in keys:
        assert key not in imported.stdout + imported.stderr
    stored = await query(fresh_database_url, "SELECT c.key_hash, c.imported, a.name, a.environment, p.slug "
                                             "FROM credentials c JOIN applications a ON a.id = c.application_id "
                                             "JOIN partners p ON p.id = a.partner_id")
    by_hash = {row[0]: row[1:] for row in stored}
    assert by_hash[keyed_hash(keys[0], TEST_SECRET)] == (True, "Globex live", "production", "globex-corporation")
    assert by_hash[keyed_hash(keys[1], TEST_SECRET)] == (True, "Globex live", "production", "globex-corporation")
    assert by_hash[keyed_hash(keys[2], TEST_SECRET)] == (True, "Imported keys (sandbox)", "sandbox", "initech")
    partners = await query(fresh_database_url, "SELECT p.slug, p.status, t.slug, p.custom_fields FROM partners p "
                                               "LEFT JOIN tiers t ON t.id = p.tier_id ORDER BY p.slug")
    assert [row[:3] for row in partners] == [("globex-corporation", "active", "gold"),
                                             ("initech", "pending", "silver"), ("umbrella", "pending", "silver")]

    again = await accord("partners", "import", str(csv_file), database=fresh_database_url)
    assert again.returncode == 0, again.stderr
    assert "0 partner(s) created" in again.stdout and "3 already stored" in again.stdout
    assert await count(fresh_database_url, "partners") == 3
    assert await count(fresh_database_url, "credentials") == 3


async def test_import_with_errors_in_two_rows_reports_both_and_writes_nothing(fresh_database_url: str,
                                                                              tmp_path: Path) -> None:
    setup = write(tmp_path / "setup.yaml", TIERS_AND_FIELDS)
    assert (await accord("apply", "-f", str(setup), database=fresh_database_url)).returncode == 0
    csv_file = write(tmp_path / "partners.csv", """name,contact_email,tier,cf_region
Wrong Email,not-an-email,gold,emea
Fine,fine@example.com,silver,apac
Wrong Tier,ok@example.com,diamond,mars
Also fine,also@example.com,gold,
""")
    result = await accord("partners", "import", str(csv_file), database=fresh_database_url)
    assert result.returncode == 1
    assert f"{csv_file}: row 2, contact_email: value is not a valid email address" in result.stderr
    assert f"{csv_file}: row 4, tier: no tier with slug or name 'diamond'" in result.stderr
    assert f"{csv_file}: row 4, cf_region: must be one of emea, americas, apac" in result.stderr
    assert "row 3" not in result.stderr and "row 5" not in result.stderr
    assert "nothing was imported" in result.stderr
    assert await count(fresh_database_url, "partners") == 0
