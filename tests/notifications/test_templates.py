"""Every email template renders, text and HTML, with what its callers give it."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from jinja2 import UndefinedError

from accord.events.catalog import EVENT_TYPES
from accord.notifications.planning import PLANNERS, QUEUED_DIRECTLY
from accord.notifications.rendering import render, template_names

SITE = {"program_name": "Example Partners", "base_url": "https://partners.example.com"}
SOON = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)

# One realistic context per template, and a phrase each rendering must contain.
SAMPLES: dict[str, tuple[dict[str, Any], str]] = {
    "invitation": ({"partner_name": "Acme", "role": "developer", "inviter": "ann@acme.example",
                    "email": "bob@example.com", "token": "acc_inv_" + "a" * 40, "expires_at": SOON,
                    "accept_url": "https://partners.example.com/api/invitations/accept"}, "acc_inv_aaaa"),
    "email_verification": ({"name": "Bob", "email": "bob@example.com", "token": "acc_vrf_" + "b" * 40,
                            "expires_at": SOON, "confirm_url": "https://x/api/auth/verify-email/confirm"},
                           "acc_vrf_bbbb"),
    "password_reset": ({"name": "Bob", "email": "bob@example.com", "token": "acc_rst_" + "c" * 40,
                        "expires_at": SOON, "confirm_url": "https://x/api/auth/password-reset/confirm"},
                       "acc_rst_cccc"),
    "access_decision": ({"partner_name": "Acme", "kind": "subscription", "decision": "rejected",
                         "subject_name": "the Gold plan of Social", "reason": "missing agreement"},
                        "missing agreement"),
    "partner_status": ({"partner_name": "Acme", "change": "suspended"}, "suspended"),
    "agreement_version": ({"partner_name": "Acme", "agreement_name": "API Terms", "version": "2.0",
                           "summary": "New data retention rules.", "accept_by": SOON,
                           "agreement_url": "https://partners.example.com/agreements/terms"}, "2026-12-01 09:30 UTC"),
    "agreement_deadline": ({"partner_name": "Acme", "agreement_name": "API Terms", "version": "2.0", "deadline": SOON,
                            "days_left": 3, "agreement_url": "https://partners.example.com/agreements/terms"},
                           "3 days from now"),
    "credential_expiring": ({"partner_name": "Acme", "application_name": "Shop", "environment": "production",
                             "credential_name": "default", "last4": "Wx9z", "expires_at": SOON.isoformat()},
                            "…Wx9z"),
    "credential_revoked": ({"partner_name": "Acme", "application_name": "Shop", "environment": "production",
                            "credential_name": "default", "last4": "Wx9z", "unused_days": 120}, "120 days"),
    "limit_threshold": ({"partner_name": "Acme", "application_name": "Shop", "metric": "hits", "period": "month",
                         "percent": 80, "limit": 1000}, "80%"),
    "nudge_stuck": ({"partner_name": "Acme", "days": 7, "missing_step": "made a first sandbox call",
                     "next_step": "create a sandbox application and call /sandbox/social/posts"},
                    "made a first sandbox call"),
    "nudge_inactive": ({"partner_name": "Acme", "days": 30, "last_call_at": SOON - timedelta(days=30)},
                       "30 days"),
    "announcement": ({"title": "New Insights endpoints", "body": "We added **trends**.",
                      "published_at": "2026-11-21T09:00:00+00:00"}, "We added **trends**."),
    "webhook_disabled": ({"owner_name": "Acme team", "url": "https://acme.example/hooks", "reason": "3 days of errors",
                          "disabled_at": SOON.isoformat(), "endpoint_id": "3f1c"}, "3 days of errors"),
}


def test_every_template_has_a_sample() -> None:
    assert sorted(SAMPLES) == template_names()


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_each_template_renders_text_and_html(name: str) -> None:
    context, phrase = SAMPLES[name]
    email = render(name, {**SITE, **context})
    assert email.subject and "\n" not in email.subject and "{" not in email.subject
    assert phrase in email.text_body and email.text_body.strip()
    assert "{{" not in email.text_body and "{%" not in email.text_body
    assert email.html_body is not None and email.html_body.lstrip().startswith("<!DOCTYPE html>")
    assert f"<title>{email.subject}</title>" in email.html_body.replace("&#39;", "'").replace("&amp;", "&")
    assert "Example Partners" in email.html_body


def test_html_is_escaped_and_text_is_not() -> None:
    context = {**SITE, **SAMPLES["partner_status"][0], "partner_name": "<b>Evil</b> & Co"}
    email = render("partner_status", context)
    assert "<b>Evil</b> & Co" in email.text_body
    assert "&lt;b&gt;Evil&lt;/b&gt; &amp; Co" in email.html_body and "<b>Evil</b>" not in email.html_body


def test_a_line_break_in_the_data_cannot_add_a_header() -> None:
    context = {**SITE, **SAMPLES["partner_status"][0], "partner_name": "Acme\r\nBcc: victim@example.com"}
    assert render("partner_status", context).subject == \
        "Acme Bcc: victim@example.com was suspended on Example Partners"


def test_a_missing_variable_is_an_error_not_an_empty_string() -> None:
    context = {**SITE, **SAMPLES["invitation"][0]}
    del context["token"]
    with pytest.raises(UndefinedError):
        render("invitation", context)
    with pytest.raises(ValueError, match="unknown email template"):
        render("no_such_template", SITE)


def test_the_event_catalog_and_the_planners_agree() -> None:
    """The catalog's `emails` is what partners read; the planners are what happens."""
    with_emails = {name: t.emails for name, t in EVENT_TYPES.items() if t.emails}
    assert set(with_emails) == set(PLANNERS) | set(QUEUED_DIRECTLY)
    assert {t for emails in with_emails.values() for t in emails} <= set(template_names())
    for name, templates in QUEUED_DIRECTLY.items():
        assert with_emails[name] == templates
