"""Webhook signing secrets: generated, shown once, and kept encrypted at rest.

Unlike API keys (stored as a keyed hash), a signing secret is needed in clear every
time a delivery is signed, so it is stored encrypted with a key derived from the
server's `secret_key`. The `cryptography` package is not a dependency, so the cipher
is built from HMAC-SHA256 alone, as encrypt-then-MAC:

- two keys are derived from `secret_key`: `enc_key` and `mac_key` (HMAC-SHA256 of the
  server key over a fixed label each, so they are independent);
- a fresh 16-byte random nonce per secret;
- keystream block i = HMAC-SHA256(enc_key, nonce || i as 4 bytes), i = 0, 1, …
  (HMAC as a pseudo-random function in counter mode); ciphertext = plaintext XOR keystream;
- tag = HMAC-SHA256(mac_key, "v1" || nonce || ciphertext), checked in constant time
  before anything is decrypted;
- stored as `v1.` + urlsafe-base64(nonce || ciphertext || tag).

Changing `ACCORD_SECRET_KEY` makes existing secrets unreadable: their deliveries fail
with a clear error, and a secret rotation (which needs no old secret) repairs an endpoint.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

SECRET_PREFIX = "whsec_"
_SECRET_BYTES = 32
_NONCE_BYTES = 16
_TAG_BYTES = 32
_VERSION = "v1"


class UnreadableSecret(ValueError):
    """The stored secret was not sealed with this server's key (or was altered)."""


def new_signing_secret() -> str:
    """A Standard Webhooks secret: `whsec_` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(_SECRET_BYTES)).decode()


def _derive(server_key: str, label: str) -> bytes:
    return hmac.new(server_key.encode(), f"accord webhook secrets {label} {_VERSION}".encode(), hashlib.sha256).digest()


def _keystream(enc_key: bytes, nonce: bytes, length: int) -> bytes:
    blocks = (hmac.new(enc_key, nonce + i.to_bytes(4, "big"), hashlib.sha256).digest()
              for i in range((length + 31) // 32))
    return b"".join(blocks)[:length]


def _xor(data: bytes, stream: bytes) -> bytes:
    return bytes(a ^ b for a, b in zip(data, stream, strict=True))


def seal(plaintext: str, server_key: str) -> str:
    data = plaintext.encode()
    nonce = secrets.token_bytes(_NONCE_BYTES)
    ciphertext = _xor(data, _keystream(_derive(server_key, "encryption"), nonce, len(data)))
    tag = hmac.new(_derive(server_key, "mac"), _VERSION.encode() + nonce + ciphertext, hashlib.sha256).digest()
    return f"{_VERSION}." + base64.urlsafe_b64encode(nonce + ciphertext + tag).decode()


def unseal(sealed: str, server_key: str) -> str:
    version, _, body = sealed.partition(".")
    try:
        raw = base64.urlsafe_b64decode(body.encode())
    except (ValueError, TypeError) as exc:
        raise UnreadableSecret("the stored signing secret is corrupt") from exc
    if version != _VERSION or len(raw) < _NONCE_BYTES + _TAG_BYTES:
        raise UnreadableSecret("the stored signing secret is corrupt")
    nonce, ciphertext, tag = raw[:_NONCE_BYTES], raw[_NONCE_BYTES:-_TAG_BYTES], raw[-_TAG_BYTES:]
    expected = hmac.new(_derive(server_key, "mac"), _VERSION.encode() + nonce + ciphertext, hashlib.sha256).digest()
    if not hmac.compare_digest(tag, expected):
        raise UnreadableSecret("the signing secret cannot be decrypted with this server's secret key "
                               "(was ACCORD_SECRET_KEY changed?); rotate the endpoint's secret")
    return _xor(ciphertext, _keystream(_derive(server_key, "encryption"), nonce, len(ciphertext))).decode()
