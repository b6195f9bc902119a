"""Standard Webhooks signatures (https://www.standardwebhooks.com).

Each delivery carries `webhook-id` (the event id, the same on every attempt, so receivers
can deduplicate), `webhook-timestamp` (seconds since the epoch, the attempt's time) and
`webhook-signature`: `v1,<base64 HMAC-SHA256 of "id.timestamp.body">` for each secret the
endpoint signs with, separated by spaces (two during a secret rotation's overlap).
"""
from __future__ import annotations

from datetime import datetime
from math import floor

from standardwebhooks import Webhook


def signature_headers(message_id: str, timestamp: datetime, body: str, secrets: list[str]) -> dict[str, str]:
    if not secrets:
        raise ValueError("an endpoint always has a signing secret")
    signatures = " ".join(Webhook(secret).sign(message_id, timestamp, body) for secret in secrets)
    return {"webhook-id": message_id, "webhook-timestamp": str(floor(timestamp.timestamp())),
            "webhook-signature": signatures}
