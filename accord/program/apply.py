"""`accord apply`: make the database match a program file, in the caller's one transaction.

Declarative and idempotent: each thing in the file is found by its natural key
(see `spec`), created when missing and updated field by field when it differs,
always through the domain services (so their validation and audit apply, with the
given actor). Applying the same file twice changes nothing the second time.

Nothing is deleted unless `prune=True`: then whatever the database has that the
file does not is removed — deleted, or ended where the domain keeps a record
(credentials revoked, subscriptions cancelled, partners with history closed).
Without it, those things are listed in `ApplyResult.left_over`.

The function never commits. Any problem raises ProgramError naming the place in
the file; the caller rolls back, so a failed apply changes nothing. A dry run is
the same call followed by a rollback: the changes listed are exactly those made.
"""
from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from accord.auth.actor import Actor
from accord.core.config import Settings
from accord.program import apply_agreements, apply_catalog, apply_partners, apply_products
from accord.program.checks import check_references
from accord.program.context import ApplyResult, Context, CreatedSecret
from accord.program.document import validate_document
from accord.program.errors import ProgramError
from accord.program.spec import ProgramSpec

__all__ = ["ApplyResult", "CreatedSecret", "apply_program"]


async def apply_program(session: AsyncSession, settings: Settings, document: dict[str, Any] | ProgramSpec, *,
                        actor: Actor, prune: bool = False, source: str | None = None) -> ApplyResult:
    """Apply a program (as loaded by `load_document`) and return the changes and new secrets."""
    try:
        spec = validate_document(document)
        await check_references(session, spec, prune)
        ctx = Context(session, settings, actor, prune)
        # Dependencies first: tiers and custom fields, the catalog, products and plans, then partners.
        await apply_catalog.apply_tiers(ctx, spec)
        await apply_catalog.apply_custom_fields(ctx, spec)
        await apply_catalog.apply_apis(ctx, spec)
        await apply_products.apply_products(ctx, spec)
        await apply_agreements.apply_agreements(ctx, spec)
        await apply_partners.apply_partners(ctx, spec)
        # Then what goes, dependents first; products shrink only once their plans fit.
        await apply_products.prune_plans(ctx, spec)
        await apply_products.finish_products(ctx, spec)
        await apply_partners.prune_partners(ctx, spec)
        await apply_agreements.prune_agreements(ctx, spec)
        await apply_products.prune_products(ctx, spec)
        await apply_catalog.prune_metrics_and_rules(ctx, spec)
        await apply_catalog.prune_apis(ctx, spec)
        await apply_catalog.prune_custom_fields(ctx, spec)
        await apply_catalog.prune_tiers(ctx, spec)
        await session.flush()
    except ProgramError as exc:
        raise exc.with_source(source) from exc
    return ctx.result
