"""Rendering emails from Jinja2 templates in `templates/`.

Each email `<name>` has a text template `<name>.txt` whose first line is `Subject: …`
(then a blank line, then the body) and, optionally, an HTML body `<name>.html`
(autoescaped; it usually extends `_layout.html`). A missing variable is an error,
never a silently empty string, so a template and its callers cannot drift apart.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, Template, TemplateNotFound, select_autoescape

from accord.core.config import Settings

TEMPLATES_DIR = Path(__file__).parent / "templates"


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    text_body: str
    html_body: str | None


def when(moment: datetime | str | None) -> str:
    """A moment as people read it in an email: `2026-11-21 08:00 UTC` (templates: `{{ x | when }}`)."""
    if moment is None or moment == "":
        return "never"
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


@cache
def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES_DIR),
        autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False, default=False),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["when"] = when
    return env


def template_names() -> list[str]:
    """Every email that can be rendered (a `<name>.txt` that is not a partial)."""
    return sorted(p.stem for p in TEMPLATES_DIR.glob("*.txt") if not p.name.startswith("_"))


@cache
def _text_template(name: str) -> tuple[Template, Template]:
    """The subject line and the body of `<name>.txt`, compiled apart.

    Apart, so that a line break inside the data (a partner's name) stays in the subject,
    where it is folded away, instead of ending it early.
    """
    env = _environment()
    try:
        source, _, _ = env.loader.get_source(env, f"{name}.txt")  # type: ignore[union-attr]
    except TemplateNotFound as exc:
        raise ValueError(f"unknown email template {name!r}") from exc
    first, _, body = source.partition("\n")
    if not first.startswith("Subject:"):
        raise ValueError(f"{name}.txt must start with a 'Subject: …' line")
    return env.from_string(first.removeprefix("Subject:")), env.from_string(body.lstrip("\n"))


def render(template: str, context: dict[str, Any]) -> RenderedEmail:
    subject_template, body_template = _text_template(template)
    # One line, whatever the data held: a line break in a header would let the data add headers of its own.
    subject = " ".join(subject_template.render(context).split())
    text = body_template.render(context)
    try:
        html: str | None = _environment().get_template(f"{template}.html").render({**context, "subject": subject})
    except TemplateNotFound:
        html = None
    return RenderedEmail(subject=subject, text_body=text, html_body=html)


def site_context(settings: Settings) -> dict[str, Any]:
    """What every template may use: the program's name and the control plane's public address."""
    return {"program_name": settings.program_name, "base_url": public_url(settings)}


def public_url(settings: Settings) -> str:
    if settings.public_url:
        return settings.public_url.rstrip("/")
    return f"http://{settings.host}:{settings.port}"
