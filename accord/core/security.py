"""Secrets: generated with `secrets`, shown once, stored only as a keyed hash.

API keys, admin tokens, session tokens and invitation tokens are all long
random strings, so a keyed HMAC-SHA256 is the right at-rest form: it is
fast enough for the gateway's hot path and useless without the server key.
Passwords are chosen by people, so they get argon2.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
import string

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

_ALPHABET = string.ascii_letters + string.digits
_password_hasher = PasswordHasher()


def new_secret(prefix: str, length: int = 40) -> str:
    """A random secret with a readable prefix, e.g. `acc_test_…`."""
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(length))


def keyed_hash(secret: str, server_key: str) -> str:
    return hmac.new(server_key.encode(), secret.encode(), hashlib.sha256).hexdigest()


def last_four(secret: str) -> str:
    return secret[-4:]


def hash_password(password: str) -> str:
    return _password_hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _password_hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
