"""`accord apply` and `accord export` carry agreements, their versions and requirements."""
from __future__ import annotations

import pytest
import yaml
from sqlalchemy import select

from accord.agreements.models import Agreement, AgreementVersion
from accord.auth.actor import CLI_ACTOR
from accord.program.apply import apply_program
from accord.program.document import parse_document
from accord.program.errors import ProgramError
from accord.program.export import dump_program, export_program

PROGRAM = """
tiers:
  - {slug: gold, name: Gold, rank: 10}
products:
  - slug: maps
    name: Maps
    visibility: partner
agreements:
  - slug: terms
    title: API Terms of Service
    description: What every partner signs
    versions:
      - number: 1
        body: "# Terms\\n\\nBe nice."
        published_at: "2023-01-02T03:04:05Z"
      - number: 2
        body: "# Terms\\n\\nBe nicer."
        changes_summary: Nicer
        grace_days: 14
        published_at: "2024-01-02T03:04:05Z"
        effective_at: "2024-02-01T00:00:00Z"
      - number: 3
        body: "# Terms\\n\\nBe nicest."
        material: false
        draft: true
    requirements:
      - {scope: all}
      - {scope: partner_type, partner_type: reseller}
      - {scope: product, product: maps}
      - {scope: stage, stage: terms_accepted}
      - {scope: tier, tier: gold}
"""


async def _apply(session, settings, text: str, prune: bool = False):
    return await apply_program(session, settings, parse_document(text), actor=CLI_ACTOR, prune=prune)


def _summaries(result) -> list[str]:
    return [c.summary() for c in result.changes if "agreement" in c.kind]


async def test_apply_export_round_trip(session, settings) -> None:
    first = await _apply(session, settings, PROGRAM)
    assert _summaries(first) == [
        "+ create agreement terms", "+ create agreement version terms v1 (published)",
        "+ create agreement version terms v2 (published)", "+ create agreement version terms v3 (draft)",
        "+ create agreement requirement terms/all", "+ create agreement requirement terms/partner_type:reseller",
        "+ create agreement requirement terms/product:maps",
        "+ create agreement requirement terms/stage:terms_accepted", "+ create agreement requirement terms/tier:gold"]
    versions = (await session.scalars(select(AgreementVersion).order_by(AgreementVersion.number))).all()
    assert [(v.number, v.published_at is not None) for v in versions] == [(1, True), (2, True), (3, False)]
    assert versions[0].published_at.isoformat() == "2023-01-02T03:04:05+00:00"

    again = await _apply(session, settings, PROGRAM)
    assert again.changes == [] and again.left_over == []

    exported = await export_program(session)
    document = parse_document(PROGRAM)
    assert exported["agreements"] == document["agreements"]
    assert yaml.safe_load(dump_program(exported))["agreements"] == document["agreements"]
    # The export applies back with no change.
    assert (await _apply(session, settings, dump_program(exported))).changes == []


async def test_published_versions_do_not_change(session, settings) -> None:
    await _apply(session, settings, PROGRAM)
    with pytest.raises(ProgramError) as caught:
        await _apply(session, settings, PROGRAM.replace("Be nice.", "Be mean."))
    assert caught.value.problems == [("agreements[0].versions[0].body",
                                      "version 1 is published and cannot change; add version 2 instead")]


async def test_drafts_are_published_and_requirements_pruned(session, settings) -> None:
    await _apply(session, settings, PROGRAM)
    published = PROGRAM.replace("        draft: true\n", "").replace("      - {scope: all}\n", "")
    assert published != PROGRAM
    result = await _apply(session, settings, published)
    assert _summaries(result) == ["~ update agreement version terms v3 (published)"]
    assert [c.summary() for c in result.left_over] == ["- delete agreement requirement terms/all"]
    pruned = await _apply(session, settings, published, prune=True)
    assert _summaries(pruned) == ["- delete agreement requirement terms/all"]

    # Dropping a published agreement from the file ends it: it binds nobody, its history stays.
    without = published[:published.index("agreements:")]
    ended = await _apply(session, settings, without, prune=True)
    assert _summaries(ended) == [
        "- remove agreement terms (published: kept for the record; its requirements and draft removed)"]
    assert await session.scalar(select(Agreement.slug)) == "terms"


async def test_references_are_checked(session, settings) -> None:
    bad = PROGRAM.replace("product: maps}", "product: nowhere}").replace("stage: terms_accepted", "stage: moon")
    with pytest.raises(ProgramError) as caught:
        await _apply(session, settings, bad)
    assert caught.value.problems[0][0] == "agreements[0].requirements[2].product"
    with pytest.raises(ProgramError) as caught:
        await _apply(session, settings, PROGRAM.replace("stage: terms_accepted", "stage: moon"))
    assert caught.value.problems[0][0] == "agreements[0].requirements[3].stage"
    assert caught.value.problems[0][1].startswith("not an onboarding stage; one of registered, terms_accepted")
    with pytest.raises(ProgramError) as caught:
        await _apply(session, settings, PROGRAM.replace("{scope: all}", "{scope: all, tier: gold}"))
    assert "agreements[0].requirements[0]" in str(caught.value)
