"""The stages of the onboarding path: the built-in defaults, and the program's changes to them.

Built-in stages are reached from facts and keep their relative order; a program may
rename them, describe them and set how long a partner may stay in one before it
counts as stuck. Manual stages (staff mark them per partner) may be inserted
anywhere after `registered`, moved, and removed while no partner is at them.
Positions are renumbered 10, 20, 30 … after every change.
"""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from accord.audit import service as audit
from accord.auth.actor import Actor
from accord.core.errors import ProblemError, conflict, invalid, not_found
from accord.onboarding.models import OnboardingStage, PartnerOnboarding, StageKind

REGISTERED = "registered"
TERMS_ACCEPTED = "terms_accepted"
SANDBOX_ACCESS = "sandbox_access"
FIRST_SANDBOX_CALL = "first_sandbox_call"
PRODUCTION_REQUESTED = "production_requested"
PRODUCTION_APPROVED = "production_approved"
LIVE = "live"
ACTIVE = "active"
# Side states: not stages of the path, but where a partner can be instead of moving along it.
INACTIVE = "inactive"
CHURNED = "churned"
SIDE_STATES = frozenset({INACTIVE, CHURNED})


@dataclass(frozen=True)
class DefaultStage:
    key: str
    name: str
    description: str
    stuck_after_days: int | None


DEFAULT_STAGES: tuple[DefaultStage, ...] = (
    DefaultStage(REGISTERED, "Registered", "The partner organisation exists.", 7),
    DefaultStage(TERMS_ACCEPTED, "Terms accepted", "Every agreement this stage requires is accepted.", 7),
    DefaultStage(SANDBOX_ACCESS, "Sandbox access", "A live sandbox application with a key.", 7),
    DefaultStage(FIRST_SANDBOX_CALL, "First sandbox call", "The gateway admitted a first sandbox call.", 14),
    DefaultStage(PRODUCTION_REQUESTED, "Production requested", "A production access request was sent.", None),
    DefaultStage(PRODUCTION_APPROVED, "Production approved", "A production access request was approved.", 14),
    DefaultStage(LIVE, "Live", "The gateway admitted a first production call.", None),
    DefaultStage(ACTIVE, "Active", "Production calls at least 7 days after the first one.", None),
)
BUILTIN_KEYS = tuple(stage.key for stage in DEFAULT_STAGES)
_STEP = 10


async def ensure_stages(session: AsyncSession) -> None:
    """Insert the built-in stages that are missing (a fresh program, or one made before a stage existed)."""
    present = set(await session.scalars(select(OnboardingStage.key).where(OnboardingStage.key.in_(BUILTIN_KEYS))))
    missing = [stage for stage in DEFAULT_STAGES if stage.key not in present]
    if not missing:
        return
    top = await session.scalar(select(func.max(OnboardingStage.position))) or 0
    rows = []
    for stage in missing:
        index = BUILTIN_KEYS.index(stage.key)
        rows.append({"key": stage.key, "name": stage.name, "description": stage.description,
                     "position": (index + 1) * _STEP if not present else top + (index + 1) * _STEP,
                     "kind": StageKind.builtin.value, "stuck_after_days": stage.stuck_after_days})
    dialect = session.bind.dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    # Two processes seeding at once: the second one's rows are ignored, not an error.
    await session.execute(insert(OnboardingStage).on_conflict_do_nothing(index_elements=["key"]), rows)
    if present:
        await _renumber(session, await _ordered(session))


async def _ordered(session: AsyncSession) -> list[OnboardingStage]:
    return list(await session.scalars(select(OnboardingStage).order_by(OnboardingStage.position,
                                                                       OnboardingStage.key)))


async def stages(session: AsyncSession) -> list[OnboardingStage]:
    """Every stage of the path, in order (seeded on first use)."""
    await ensure_stages(session)
    return await _ordered(session)


async def _renumber(session: AsyncSession, ordered: list[OnboardingStage]) -> None:
    # Built-ins keep their relative order whatever the positions said.
    builtins = iter(sorted((s for s in ordered if s.kind == StageKind.builtin),
                           key=lambda s: BUILTIN_KEYS.index(s.key)))
    fixed = [next(builtins) if s.kind == StageKind.builtin else s for s in ordered]
    for index, stage in enumerate(fixed):
        if stage.position != (index + 1) * _STEP:
            stage.position = (index + 1) * _STEP
    await session.flush()


async def get_stage(session: AsyncSession, key: str) -> OnboardingStage:
    await ensure_stages(session)
    stage = await session.get(OnboardingStage, key)
    if stage is None:
        raise not_found("stage")
    return stage


def _place_after(ordered: list[OnboardingStage], stage: OnboardingStage, after: str) -> list[OnboardingStage]:
    rest = [s for s in ordered if s.key != stage.key]
    keys = [s.key for s in rest]
    if after not in keys:
        raise invalid("after", "no such stage")
    index = keys.index(after) + 1
    return rest[:index] + [stage] + rest[index:]


async def create_manual_stage(session: AsyncSession, actor: Actor, *, key: str, name: str, description: str,
                              after: str, stuck_after_days: int | None) -> OnboardingStage:
    ordered = await stages(session)
    if key in SIDE_STATES or any(s.key == key for s in ordered):
        raise conflict("key", "a stage with this key exists")
    stage = OnboardingStage(key=key, name=name, description=description, kind=StageKind.manual,
                            stuck_after_days=stuck_after_days, position=0)
    placed = _place_after(ordered, stage, after)
    session.add(stage)
    await _renumber(session, placed)
    await audit.record(session, actor, "onboarding_stage.created", target_type="onboarding_stages",
                       target_id=key, after=audit.snapshot(stage))
    return stage


async def update_stage(session: AsyncSession, actor: Actor, key: str, changes: dict) -> OnboardingStage:
    stage = await get_stage(session, key)
    before = audit.snapshot(stage)
    after_key = changes.pop("after", None)
    for field, value in changes.items():
        if value is None and field != "stuck_after_days":
            raise invalid(field, "may not be null")
        setattr(stage, field, value)
    if after_key is not None:
        if stage.kind != StageKind.manual:
            raise invalid("after", "built-in stages keep their order; only manual stages move")
        if after_key == stage.key:
            raise invalid("after", "a stage cannot follow itself")
        await _renumber(session, _place_after(await _ordered(session), stage, after_key))
    await session.flush()
    await audit.record(session, actor, "onboarding_stage.updated", target_type="onboarding_stages",
                       target_id=key, before=before, after=audit.snapshot(stage))
    return stage


async def delete_stage(session: AsyncSession, actor: Actor, key: str) -> None:
    stage = await get_stage(session, key)
    if stage.kind != StageKind.manual:
        raise ProblemError("invalid-state", "built-in stages cannot be removed; rename them instead",
                           [{"field": "key", "reason": "is a built-in stage"}])
    at_it = await session.scalar(select(func.count()).select_from(PartnerOnboarding)
                                 .where(PartnerOnboarding.stage_key == key))
    if at_it:
        raise conflict("key", f"{at_it} partner(s) are at this stage")
    before = audit.snapshot(stage)
    await session.delete(stage)
    await session.flush()
    await _renumber(session, await _ordered(session))
    await audit.record(session, actor, "onboarding_stage.deleted", target_type="onboarding_stages",
                       target_id=key, before=before)

