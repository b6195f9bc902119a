"""What one `accord apply` run carries around: the session, the changes so far, the secrets made."""
from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from accord.auth.actor import Actor
from accord.core.config import Settings
from accord.core.errors import ProblemError
from accord.program.changes import Change, FieldChange
from accord.program.errors import ProgramError, join_path

# Reasons written into the records of things `--prune` ends rather than deletes.
PRUNE_REASON = "removed from the program file (accord apply --prune)"


@dataclass
class CreatedSecret:
    """A credential `accord apply` created: its secret exists only here, shown once."""

    partner: str
    application: str
    environment: str
    name: str
    secret: str


@dataclass
class ApplyResult:
    changes: list[Change] = field(default_factory=list)
    secrets: list[CreatedSecret] = field(default_factory=list)
    # What is in the database but not in the file: `--prune` would remove it.
    left_over: list[Change] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.changes)


def _service_field(name: str) -> str:
    """A service's dotted field (`limits.0.metric`) in file notation (`limits[0].metric`)."""
    return re.sub(r"\.(\d+)(?=\.|$)", r"[\1]", name)


class Context:
    def __init__(self, session: AsyncSession, settings: Settings, actor: Actor, prune: bool,
                 join: Callable[[str, str], str] = join_path) -> None:
        self.session = session
        self.settings = settings
        self.actor = actor
        self.prune = prune
        # How a service's field name is added to a location: `partners[0]` + `name` → `partners[0].name`.
        self.join = join
        self.result = ApplyResult()

    def record(self, action: str, kind: str, key: str, fields: list[FieldChange] | None = None,
               note: str = "") -> Change:
        change = Change(action, kind, key, fields or [], note)
        self.result.changes.append(change)
        return change

    @contextmanager
    def at(self, path: str, rename: dict[str, str] | None = None) -> Iterator[None]:
        """Turn a service's problem into a ProgramError at `path` (its fields renamed to the file's)."""
        rename = rename or {}
        try:
            yield
        except ProblemError as exc:
            if exc.errors:
                problems = [(self.join(path, rename.get(e["field"], _service_field(e["field"]))), e["reason"])
                            for e in exc.errors]
            else:
                problems = [(path, exc.detail or exc.slug)]
            raise ProgramError(problems) from exc
        except DBAPIError as exc:  # a unique constraint or a value the database cannot store
            raise ProgramError([(path, f"the database refused it: {str(exc.orig).splitlines()[0]}")]) from exc

    async def remove(self, path: str, change: Change, action: Callable[[], Awaitable[Any]]) -> None:
        """Remove something the file no longer has, with --prune; otherwise only note that it is left over."""
        if not self.prune:
            self.result.left_over.append(change)
            return
        with self.at(path):
            await action()
        self.result.changes.append(change)
