"""`accord partners import` in-process: parsing, validation by row and column, updates, keys."""
from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from accord.apps.models import Application, Credential, Environment
from accord.auth.actor import CLI_ACTOR
from accord.core.config import Settings
from accord.core.security import keyed_hash
from accord.customfields.models import FieldDefinition, FieldTarget, FieldType
from accord.partners.models import Partner, PartnerStatus, PartnerType, Tier
from accord.program.errors import ProgramError
from accord.program.importer import ImportResult, import_partners, read_records, slugify
from tests.factories import Factory
from tests.program.helpers import write


async def setup_program(session: AsyncSession) -> None:
    session.add_all([Tier(slug="registered", name="Registered", rank=10), Tier(slug="gold", name="Gold", rank=30),
                     FieldDefinition(target=FieldTarget.partner, key="employees", label="Employees",
                                     type=FieldType.number),
                     FieldDefinition(target=FieldTarget.partner, key="reseller", label="Reseller",
                                     type=FieldType.boolean)])
    await session.flush()


async def run(session: AsyncSession, settings: Settings, path: Path) -> ImportResult:
    return await import_partners(session, settings, read_records(path), actor=CLI_ACTOR)


def test_slugs_come_from_names() -> None:
    assert slugify("Acme Analytics, Inc.") == "acme-analytics-inc"
    assert slugify("Café Zoë") == "cafe-zoe"
    assert slugify("!!!") == "partner"


async def test_yaml_import_creates_then_updates_without_duplicating(tmp_path: Path, session: AsyncSession,
                                                                   settings: Settings) -> None:
    await setup_program(session)
    path = write(tmp_path / "partners.yaml", """
partners:
  - name: Acme
    type: technology
    tier: GOLD
    status: suspended
    country: de
    cf_employees: "250"
    custom_fields: {reseller: "yes"}
    api_key: legacy-acme-production-key-1
  - slug: acme
    api_key: acc_test_legacy-acme-sandbox-key
    application: Acme sandbox
""")
    first = await run(session, settings, path)
    assert (first.partners_created, first.keys_imported) == (1, 2)
    acme = await session.scalar(select(Partner).where(Partner.slug == "acme"))
    assert acme.type == PartnerType.technology and acme.country == "DE"
    assert acme.status == PartnerStatus.suspended and acme.status_reason
    assert acme.custom_fields == {"employees": 250, "reseller": True}
    assert (await session.get(Tier, acme.tier_id)).slug == "gold"
    apps = {a.name: a.environment for a in await session.scalars(select(Application))}
    assert apps == {"Imported keys (production)": Environment.production, "Acme sandbox": Environment.sandbox}
    hashes = set(await session.scalars(select(Credential.key_hash).where(Credential.imported.is_(True))))
    assert hashes == {keyed_hash("legacy-acme-production-key-1", settings.secret_key),
                      keyed_hash("acc_test_legacy-acme-sandbox-key", settings.secret_key)}

    write(path, """
- {slug: acme, name: Acme Corp, status: active, cf_employees: 300, api_key: legacy-acme-production-key-1}
""")
    second = await run(session, settings, path)
    assert (second.partners_created, second.partners_updated, second.keys_imported, second.keys_already_stored) \
        == (0, 1, 0, 1)
    fields = {f.name: (f.old, f.new) for f in second.changes[0].fields}
    assert fields["name"] == ("Acme", "Acme Corp") and fields["status"] == (PartnerStatus.suspended, "active")
    await session.refresh(acme)
    assert acme.name == "Acme Corp" and acme.status == PartnerStatus.active
    assert acme.custom_fields == {"employees": 300, "reseller": True}
    assert len(list(await session.scalars(select(Partner)))) == 1


async def test_every_problem_is_named_by_row_and_column(tmp_path: Path, session: AsyncSession,
                                                        settings: Settings, factory: Factory) -> None:
    await setup_program(session)
    other = await factory.partner(slug="other")
    app = await factory.application(other)
    _, taken = await factory.credential(app)
    path = write(tmp_path / "partners.csv", f"""name,slug,type,country,cf_employees,cf_unknown,api_key,api_key_environment,application
Acme,,robot,XX,many,1,,,
Acme,,technology,,,,acc_live_productionkey0000000001,sandbox,
Beta,,,,,,{taken},,
Gamma,,,,,,gamma-key-1234567890,production,Gamma app
Gamma,,,,,,gamma-key-1234567890,production,Gamma app
Gamma,,,,,,gamma-key-0987654321,sandbox,Gamma app
,,,,,,,,
,nobody,,,,,,,
""")
    with pytest.raises(ProgramError) as caught:
        await run(session, settings, path)
    assert caught.value.problems == [
        ("row 2, type", "Input should be 'developer', 'agency', 'consulting', 'technology', 'integration', "
                        "'franchise', 'reseller', 'affiliate', 'white-label', 'academic', 'non-profit', "
                        "'government', 'contractor' or 'internal'"),
        ("row 2, country", "must be an ISO 3166-1 alpha-2 country code, e.g. DE or US"),
        ("row 2, cf_employees", "must be a number"),
        ("row 2, cf_unknown", "no such custom field"),
        ("row 3, api_key", "is a production key, but api_key_environment is sandbox"),
        ("row 4, api_key", "this key is already stored for another application"),
        ("row 6, api_key", "the same key is in row 5"),
        ("row 7, application", "'Gamma app' gets a production key in row 5; an application holds keys of one "
                               "environment"),
        ("row 9, name", "is required: there is no partner 'nobody' yet"),
    ]
    assert list(await session.scalars(select(Partner).where(Partner.slug != "other"))) == []


async def test_rows_of_one_partner_must_agree(tmp_path: Path, session: AsyncSession, settings: Settings) -> None:
    await setup_program(session)
    path = write(tmp_path / "p.csv", "name,type\nAcme,agency\nAcme,agency\nAcme,reseller\n")
    with pytest.raises(ProgramError) as caught:
        await run(session, settings, path)
    assert caught.value.problems == [("row 4, type", "differs from row 2 of the same partner ('agency')")]


@pytest.mark.parametrize(("name", "content", "problem"), [
    ("p.csv", "name,colour\nAcme,red\n", ("header", "unknown column 'colour'")),
    ("p.csv", "", ("header", "the file has no header row")),
    ("p.txt", "name\nAcme\n", ("", "the file must be .csv, .yaml or .yml")),
    ("p.yaml", "{name: Acme}", ("", "a YAML import is a list of partner records (or `partners:` with one)")),
])
def test_unreadable_files_are_refused(tmp_path: Path, name: str, content: str, problem: tuple[str, str]) -> None:
    with pytest.raises(ProgramError) as caught:
        read_records(write(tmp_path / name, content))
    assert caught.value.problems == [problem]


async def test_a_write_the_service_refuses_is_named_by_row_and_column(tmp_path: Path, session: AsyncSession,
                                                                 settings: Settings, factory: Factory) -> None:
    await setup_program(session)
    await factory.partner(slug="closed-co", status=PartnerStatus.closed)
    path = write(tmp_path / "p.csv", "name,slug,status,api_key\nNew Co,,active,new-co-key-0123456789\n"
                                     "Closed Co,closed-co,active,\n")
    with pytest.raises(ProgramError) as caught:
        await run(session, settings, path)
    assert caught.value.problems == [("row 3, status", "cannot activate the partner: it is closed, and only "
                                                       "pending or suspended partners can become active")]


async def test_nul_characters_are_refused_before_the_database_sees_them(tmp_path: Path, session: AsyncSession,
                                                                        settings: Settings) -> None:
    path = write(tmp_path / "p.csv", "name,contact_name\nAcme,Al\x00ice\n")
    with pytest.raises(ProgramError) as caught:
        await run(session, settings, path)
    assert caught.value.problems == [("row 2, contact_name", "contains a NUL character")]
