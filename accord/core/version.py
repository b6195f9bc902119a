"""The program's configuration version: bumped in the same transaction as any change the gateway serves.

Running gateways poll this one number (a primary-key read) and rebuild their
snapshot when it moves, so a change made through the admin API, the partner
API or the CLI reaches every gateway within one poll interval, and a rolled
back change never does.
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, Integer, event, insert, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from accord.core.db import Base

# Tables whose rows the gateway snapshot is built from.
WATCHED_TABLES = frozenset({
    "apis", "metrics", "mapping_rules", "products", "product_apis", "product_methods", "plans", "plan_limits",
    "plan_disabled_metrics", "partners", "subscriptions", "applications", "application_subscriptions", "credentials",
    # The agreement gate (accord.agreements.gate): accepting restores production traffic within a poll.
    "agreements", "agreement_versions", "agreement_requirements", "agreement_acceptances",
})


class ProgramVersion(Base):
    __tablename__ = "program_version"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger, default=0)


def _touches_watched(session: Session) -> bool:
    for obj in (*session.new, *session.deleted):
        if getattr(obj, "__tablename__", None) in WATCHED_TABLES:
            return True
    return any(getattr(obj, "__tablename__", None) in WATCHED_TABLES and session.is_modified(obj)
               for obj in session.dirty)


@event.listens_for(Session, "before_flush")
def _note_watched_changes(session: Session, _context: Any, _instances: Any) -> None:
    if _touches_watched(session):
        session.info["accord_bump_version"] = True


@event.listens_for(Session, "after_flush")
def _bump_version(session: Session, _context: Any) -> None:
    if session.info.pop("accord_bump_version", False):
        connection = session.connection()
        bumped = connection.execute(update(ProgramVersion).where(ProgramVersion.id == 1)
                                    .values(version=ProgramVersion.version + 1))
        if bumped.rowcount == 0:  # a database migrated before the row existed
            connection.execute(insert(ProgramVersion).values(id=1, version=1))


def ensure_version_row(connection: Any) -> None:
    """Create the single version row (run after migrations)."""
    if connection.execute(VERSION_QUERY).first() is None:
        connection.execute(insert(ProgramVersion).values(id=1, version=0))


VERSION_QUERY = select(ProgramVersion.version).where(ProgramVersion.id == 1)
