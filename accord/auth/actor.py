"""Who is acting: an admin token, a signed-in user, the CLI or the system itself."""
from __future__ import annotations

import uuid
from dataclasses import dataclass

from accord.users.models import StaffRole

# Staff roles that may change things, by capability.
WRITERS = {StaffRole.owner, StaffRole.admin, StaffRole.partner_manager}
CATALOG_WRITERS = {StaffRole.owner, StaffRole.admin}


@dataclass(frozen=True)
class Actor:
    kind: str  # admin-token | user | cli | system
    id: str
    label: str
    staff_role: StaffRole | None = None
    user_id: uuid.UUID | None = None


CLI_ACTOR = Actor(kind="cli", id="cli", label="accord CLI", staff_role=StaffRole.owner)
SYSTEM_ACTOR = Actor(kind="system", id="system", label="Accord", staff_role=StaffRole.owner)
