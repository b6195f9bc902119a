"""Factories for test data, written straight to the test's transaction.

They build rows directly (not through the services under test) so a test of
a service is never set up by the same code it checks.
"""
from __future__ import annotations

import itertools
from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from accord.apps.models import Application, ApplicationState, Credential, CredentialKind, Environment
from accord.auth.models import AdminToken
from accord.catalog.models import Api, MappingRule, Metric, Visibility
from accord.core.clock import utcnow
from accord.core.security import hash_password, keyed_hash, new_secret
from accord.partners.models import Audience, Partner, PartnerStatus, PartnerType, Tier
from accord.plans.models import Period, Plan, PlanLimit
from accord.products.models import Product, ProductApi
from accord.subscriptions.models import Subscription, SubscriptionState
from accord.teams.models import MemberRole, Membership
from accord.users.models import StaffRole, User, UserSession

_seq = itertools.count(1)

PASSWORD = "correct horse battery staple"


class Factory:
    def __init__(self, session: AsyncSession, server_key: str) -> None:
        self.session = session
        self.server_key = server_key

    async def _add(self, row: Any) -> Any:
        self.session.add(row)
        await self.session.flush()
        return row

    async def admin_token(self, role: StaffRole = StaffRole.owner) -> str:
        secret = new_secret("acc_admin_")
        await self._add(AdminToken(name=f"test-{next(_seq)}", role=role,
                                   token_hash=keyed_hash(secret, self.server_key), last4=secret[-4:]))
        return secret

    async def api(self, **kw: Any) -> Api:
        n = next(_seq)
        kw.setdefault("name", f"API {n}")
        kw.setdefault("slug", f"api-{n}")
        kw.setdefault("path_prefix", f"/api{n}")
        kw.setdefault("visibility", Visibility.partner)
        kw.setdefault("production_upstream_url", "http://127.0.0.1:9/")
        api = await self._add(Api(**kw))
        await self._add(Metric(api_id=api.id, system_name="hits", friendly_name="Hits"))
        return api

    async def metric(self, api: Api, name: str, parent: Metric | None = None) -> Metric:
        if parent is None:
            from sqlalchemy import select
            parent = await self.session.scalar(select(Metric).where(Metric.api_id == api.id,
                                                                     Metric.system_name == "hits"))
        return await self._add(Metric(api_id=api.id, parent_id=parent.id, system_name=name, friendly_name=name))

    async def rule(self, api: Api, metric: Metric, verb: str = "GET", pattern: str = "/") -> MappingRule:
        return await self._add(MappingRule(api_id=api.id, metric_id=metric.id, http_method=verb, pattern=pattern))

    async def product(self, *apis: Api, **kw: Any) -> Product:
        n = next(_seq)
        kw.setdefault("name", f"Product {n}")
        kw.setdefault("slug", f"product-{n}")
        product = await self._add(Product(**kw))
        for api in apis:
            await self._add(ProductApi(product_id=product.id, api_id=api.id))
        return product

    async def plan(self, product: Product, limits: list[tuple[Metric, Period, int]] = (), **kw: Any) -> Plan:
        n = next(_seq)
        kw.setdefault("name", f"Plan {n}")
        kw.setdefault("slug", f"plan-{n}")
        plan = await self._add(Plan(product_id=product.id, **kw))
        for metric, period, value in limits:
            await self._add(PlanLimit(plan_id=plan.id, metric_id=metric.id, period=period, value=value))
        return plan

    async def tier(self, name: str | None = None, rank: int | None = None) -> Tier:
        n = next(_seq)
        return await self._add(Tier(name=name or f"Tier {n}", slug=f"tier-{n}", rank=rank if rank is not None else n))

    async def partner(self, **kw: Any) -> Partner:
        n = next(_seq)
        kw.setdefault("name", f"Partner {n}")
        kw.setdefault("slug", f"partner-{n}")
        kw.setdefault("type", PartnerType.technology)
        kw.setdefault("audience", Audience.partner)
        kw.setdefault("status", PartnerStatus.active)
        return await self._add(Partner(**kw))

    async def user(self, email: str | None = None, *, password: str = PASSWORD,
                   staff_role: StaffRole | None = None) -> User:
        n = next(_seq)
        return await self._add(User(email=email or f"user{n}@example.com", name=f"User {n}",
                                    password_hash=hash_password(password), staff_role=staff_role))

    async def session_token(self, user: User) -> str:
        secret = new_secret("acc_sess_")
        await self._add(UserSession(user_id=user.id, token_hash=keyed_hash(secret, self.server_key),
                                    expires_at=utcnow() + timedelta(days=1)))
        return secret

    async def member(self, partner: Partner, role: MemberRole = MemberRole.partner_admin,
                     user: User | None = None) -> tuple[User, str]:
        user = user or await self.user()
        await self._add(Membership(partner_id=partner.id, user_id=user.id, role=role))
        return user, await self.session_token(user)

    async def subscription(self, partner: Partner, plan: Plan,
                           state: SubscriptionState = SubscriptionState.active) -> Subscription:
        return await self._add(Subscription(partner_id=partner.id, product_id=plan.product_id, plan_id=plan.id,
                                            state=state, activated_at=utcnow()))

    async def application(self, partner: Partner, environment: Environment = Environment.sandbox,
                          **kw: Any) -> Application:
        n = next(_seq)
        kw.setdefault("name", f"App {n}")
        kw.setdefault("state", ApplicationState.live)
        return await self._add(Application(partner_id=partner.id, environment=environment,
                                           app_id=f"app{n:06d}{new_secret('', 8).lower()}", **kw))

    async def credential(self, app: Application, **kw: Any) -> tuple[Credential, str]:
        prefix = "acc_live_" if app.environment == Environment.production else "acc_test_"
        secret = new_secret(prefix)
        kw.setdefault("name", "default")
        kw.setdefault("kind", CredentialKind.api_key)
        cred = await self._add(Credential(application_id=app.id, prefix=prefix,
                                          key_hash=keyed_hash(secret, self.server_key), last4=secret[-4:], **kw))
        return cred, secret
