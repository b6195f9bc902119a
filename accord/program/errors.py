"""One error type for program files and imports: every problem names where it is."""
from __future__ import annotations

from collections.abc import Iterable


class ProgramError(Exception):
    """Problems found in a program file (or import file), each as (location, reason).

    The location is a path into the file such as `products[0].plans[1].limits[0].metric`,
    or `row 7, contact_email` for imports.
    """

    def __init__(self, problems: Iterable[tuple[str, str]], source: str | None = None) -> None:
        self.problems = list(problems)
        self.source = source
        super().__init__(str(self))

    def lines(self) -> list[str]:
        prefix = f"{self.source}: " if self.source else ""
        return [f"{prefix}{where}: {reason}" if where else f"{prefix}{reason}" for where, reason in self.problems]

    def __str__(self) -> str:
        return "\n".join(self.lines())

    def with_source(self, source: str | None) -> "ProgramError":
        return self if self.source or not source else ProgramError(self.problems, source)


def join_path(path: str, field: str) -> str:
    """`partners[0]` + `contact.email` → `partners[0].contact.email`; a list index joins without a dot."""
    if not field:
        return path
    if not path:
        return field
    return f"{path}{field}" if field.startswith("[") else f"{path}.{field}"
