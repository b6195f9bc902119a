"""The gateway's agreement gate: when production traffic to a product stops for a partner, and why.

Computed in bulk by the snapshot builder. The answer depends on time, not only on data:
a partner that has not accepted yet is admitted until its deadline, so the snapshot
carries the deadline and the proxy compares it with its clock on each request.
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import select

from accord.agreements.status import Binder, Binding, Program, core, load_accepted, load_partners, load_program
from accord.subscriptions.models import Subscription

# (partner id, product id) → (epoch seconds from which production calls are refused, the refusal's detail)
Gates = dict[tuple[str, str], tuple[float, str]]


def refusal_detail(bound: Binding) -> str:
    return (f'production traffic needs "{bound.required.title}" version {bound.required.number} to be accepted '
            f"(deadline {bound.due_at.strftime('%Y-%m-%d %H:%M UTC')}); sandbox traffic is not affected")


async def production_gates(executor: Any) -> Gates:
    """For each partner × subscribed product, the earliest deadline of an agreement it has not accepted."""
    executor = await core(executor)
    program = await load_program(executor)
    gating = Program(program.required, [rule for rule in program.rules if program.gates_production(rule)],
                     program.stage_positions)
    if not gating.rules:
        return {}
    partners = {p.id: p for p in await load_partners(executor, None)}
    accepted = await load_accepted(executor, program, None)
    bound = Binder(gating)
    details: dict[int, tuple[float, str]] = {}  # id(binding) → its refusal, worked out once
    gates: Gates = {}
    for partner_id, product_id in await executor.execute(
            select(Subscription.partner_id, Subscription.product_id).distinct()):
        partner = partners.get(partner_id)
        if partner is None:
            continue
        earliest: Binding | None = None
        for binding in bound(partner.tier_id, partner.type, frozenset((product_id,))):
            done = accepted.get((partner_id, binding.required.agreement_id))
            if done is not None and done[0] >= binding.required.number:
                continue
            if earliest is None or binding.due_at < earliest.due_at:
                earliest = binding
        if earliest is not None:
            refusal = details.get(id(earliest))
            if refusal is None:
                refusal = details[id(earliest)] = (earliest.due_at.timestamp(), refusal_detail(earliest))
            gates[(str(partner_id), str(product_id))] = refusal
    return gates
