"""Admin routes of the integration audit: `/admin/api/integration-audit…` (report, exports, remediation)."""
from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Body, Query, Response

from accord.auth.deps import AdminDep
from accord.core.clock import utcnow
from accord.core.deps import SessionDep, SettingsDep
from accord.core.errors import WRITE_PROBLEMS, problem_responses
from accord.core.pagination import PageDep
from accord.integrations import remediation, service
from accord.integrations.schemas import (
    AuditPage,
    Flag,
    PartnerAudit,
    RequestReacceptance,
    RequestReacceptanceResult,
    RevokeStale,
    RevokeStaleResult,
)

admin_router = APIRouter(responses=problem_responses(401, 403))
AUDIT = "/integration-audit"
FlagFilter = Annotated[Flag | None, Query(description="Only partners with this flag")]
PartnerFilter = Annotated[uuid.UUID | None, Query(description="Only this partner")]


def _download(body: bytes, media_type: str, extension: str) -> Response:
    name = f"integration-audit-{utcnow():%Y%m%d-%H%M%S}.{extension}"
    return Response(body, media_type=media_type, headers={"Content-Disposition": f'attachment; filename="{name}"'})


@admin_router.get(AUDIT, summary="The integration audit: every partner's access, credentials, agreements, "
                  "traffic and stage, with flags", responses=problem_responses(422))
async def integration_audit(session: SessionDep, settings: SettingsDep, _: AdminDep, page: PageDep,
                            flag: FlagFilter = None, partner_id: PartnerFilter = None) -> AuditPage:
    return await service.audit_page(session, settings, page, flag=flag, partner_id=partner_id)


@admin_router.get(f"{AUDIT}/export.csv", summary="The whole integration audit as CSV", response_class=Response,
                  responses={200: {"content": {"text/csv": {}}}, **problem_responses(422)})
async def export_csv(session: SessionDep, settings: SettingsDep, _: AdminDep, flag: FlagFilter = None,
                     partner_id: PartnerFilter = None) -> Response:
    body = await service.export_audit(session, settings, "csv", flag=flag, partner_id=partner_id)
    return _download(body, "text/csv; charset=utf-8", "csv")


@admin_router.get(f"{AUDIT}/export.json", summary="The whole integration audit as JSON",
                  response_model=list[PartnerAudit], responses=problem_responses(422))
async def export_json(session: SessionDep, settings: SettingsDep, _: AdminDep, flag: FlagFilter = None,
                      partner_id: PartnerFilter = None) -> Response:
    body = await service.export_audit(session, settings, "json", flag=flag, partner_id=partner_id)
    return _download(body, "application/json", "json")


@admin_router.post(f"{AUDIT}/revoke-stale", summary="Revoke the credentials unused for more than "
                   "ACCORD_STALE_CREDENTIAL_DAYS (each partner is told by email)", responses=WRITE_PROBLEMS)
async def revoke_stale(session: SessionDep, settings: SettingsDep, actor: AdminDep,
                       data: Annotated[RevokeStale | None, Body()] = None) -> RevokeStaleResult:
    data = data or RevokeStale()  # no body: every partner, for real
    return await remediation.revoke_stale(session, actor, settings, partner_id=data.partner_id, dry_run=data.dry_run)


@admin_router.post(f"{AUDIT}/request-reacceptance", summary="Ask partners with overdue or missing agreements "
                   "to accept them", responses=WRITE_PROBLEMS)
async def request_reacceptance(session: SessionDep, actor: AdminDep,
                               data: Annotated[RequestReacceptance | None, Body()] = None
                               ) -> RequestReacceptanceResult:
    data = data or RequestReacceptance()
    return await remediation.request_reacceptance(session, actor, partner_id=data.partner_id,
                                                  agreement_id=data.agreement_id, include_due=data.include_due,
                                                  dry_run=data.dry_run)
