"""The stages of the path: defaults, renaming and thresholds, manual stages staff insert and mark."""
from __future__ import annotations

from sqlalchemy import select

from accord.onboarding import service as onboarding
from accord.onboarding.models import StageTransition
from tests.onboarding.helpers import error_fields, team

BUILTIN = ["registered", "terms_accepted", "sandbox_access", "first_sandbox_call", "production_requested",
           "production_approved", "live", "active"]


async def _keys(admin) -> list[str]:
    answer = await admin.get("/admin/api/onboarding/stages")
    assert answer.status_code == 200, answer.text
    return [s["key"] for s in answer.json()]


async def test_the_default_path_is_seeded_in_order(admin) -> None:
    stages = (await admin.get("/admin/api/onboarding/stages")).json()
    assert [s["key"] for s in stages] == BUILTIN
    assert all(s["kind"] == "builtin" for s in stages)
    assert [s["position"] for s in stages] == sorted(s["position"] for s in stages)
    assert {s["key"]: s["stuck_after_days"] for s in stages}["first_sandbox_call"] == 14


async def test_a_program_renames_stages_and_sets_thresholds(admin) -> None:
    answer = await admin.patch("/admin/api/onboarding/stages/sandbox_access",
                               json={"name": "Keys issued", "stuck_after_days": 3})
    assert answer.status_code == 200, answer.text
    assert answer.json()["name"] == "Keys issued" and answer.json()["stuck_after_days"] == 3
    never = await admin.patch("/admin/api/onboarding/stages/sandbox_access", json={"stuck_after_days": None})
    assert never.json()["stuck_after_days"] is None
    moved = await admin.patch("/admin/api/onboarding/stages/live", json={"after": "registered"})
    assert moved.status_code == 422 and "after" in error_fields(moved)
    assert (await admin.patch("/admin/api/onboarding/stages/live", json={"name": None})).status_code == 422
    assert (await admin.patch("/admin/api/onboarding/stages/nope", json={"name": "x"})).status_code == 404
    assert (await admin.delete("/admin/api/onboarding/stages/live")).status_code == 409
    audit = (await admin.get("/admin/api/audit", params={"action": "onboarding_stage.updated"})).json()
    assert audit["items"][0]["target_id"] == "sandbox_access"


async def test_manual_stages_are_inserted_moved_marked_and_removed(admin, anon, factory, session) -> None:
    created = await admin.post("/admin/api/onboarding/stages", json={
        "key": "security_review", "name": "Security review", "after": "production_requested",
        "description": "Our security team reviewed the integration", "stuck_after_days": 10})
    assert created.status_code == 201, created.text
    assert created.json()["kind"] == "manual"
    keys = await _keys(admin)
    assert keys.index("security_review") == keys.index("production_requested") + 1
    for body, field in [({"key": "live", "name": "x", "after": "registered"}, "key"),
                        ({"key": "Bad Key", "name": "x", "after": "registered"}, "key"),
                        ({"key": "other", "name": "x", "after": "nowhere"}, "after")]:
        answer = await admin.post("/admin/api/onboarding/stages", json=body)
        assert answer.status_code in (409, 422) and field in error_fields(answer), answer.text

    moved = await admin.patch("/admin/api/onboarding/stages/security_review", json={"after": "first_sandbox_call"})
    assert moved.status_code == 200, moved.text
    keys = await _keys(admin)
    assert keys.index("security_review") == keys.index("first_sandbox_call") + 1
    assert [k for k in keys if k != "security_review"] == BUILTIN  # built-ins keep their order

    # Staff mark it for a partner: it moves there (stages before it whose facts never happened are skipped).
    partner, headers, _ = await team(factory)
    await onboarding.refresh(session, [partner.id])
    built_in = await admin.post(f"/admin/api/partners/{partner.id}/onboarding/stages/live/mark", json={})
    assert built_in.status_code == 422
    marked = await admin.post(f"/admin/api/partners/{partner.id}/onboarding/stages/security_review/mark",
                              json={"note": "pen test passed"})
    assert marked.status_code == 200, marked.text
    assert marked.json()["stage_key"] == "security_review"
    last = marked.json()["timeline"][-1]
    assert last["to_stage"] == "security_review" and last["cause"] == "pen test passed" and last["actor"]
    assert (await admin.post(f"/admin/api/partners/{partner.id}/onboarding/stages/security_review/mark",
                             json={})).status_code == 409
    mine = (await anon.get(f"/api/partners/{partner.id}/onboarding", headers=headers)).json()
    assert mine["stage_name"] == "Security review" and "actor" not in mine["timeline"][-1]
    assert mine["next_steps"][0]["stage_key"] == "production_requested"

    # A stage a partner is at cannot go; the mark cannot be taken back once passed.
    assert (await admin.delete(f"/admin/api/partners/{partner.id}/onboarding/stages/security_review/mark"))\
        .status_code == 409
    assert (await admin.delete("/admin/api/onboarding/stages/security_review")).status_code == 409
    other = await factory.partner()
    await onboarding.refresh(session, [other.id])
    transitions = await session.scalars(select(StageTransition).where(StageTransition.partner_id == other.id))
    assert "security_review" not in {t.to_stage for t in transitions}


async def test_partners_are_listed_by_stage_and_status(admin, factory, session) -> None:
    first, _, _ = await team(factory)
    second, _, _ = await team(factory)
    await onboarding.refresh(session, [first.id, second.id])
    listed = (await admin.get("/admin/api/onboarding/partners", params={"stage": "terms_accepted"})).json()
    assert {first.name, second.name} <= {row["partner_name"] for row in listed["items"]}
    assert (await admin.get("/admin/api/onboarding/partners", params={"status": "churned"})).json()["total"] == 0
    assert (await admin.get("/admin/api/onboarding/partners", params={"stuck": "true"})).json()["total"] == 0
    detail = (await admin.get(f"/admin/api/partners/{first.id}/onboarding")).json()
    assert [t["to_stage"] for t in detail["timeline"]] == ["registered", "terms_accepted"]
    assert detail["next_steps"][0]["title"] == "Sandbox access"
