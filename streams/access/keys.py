"""API keys: made, stored as a salted scrypt hash, sent as `Authorization: Bearer`, verified (cached).

A key is `strm_<prefix>_<secret>`: 12 hex digits that find its row with one indexed lookup,
then 32 random bytes. Only the hash of the whole key is stored and the hash is compared in
constant time. A verified key is remembered for STREAMS_API_KEY_CACHE_S seconds (by its
SHA-256, never in clear), so scrypt runs once per key and process in that time, and a
revoked key is refused within it.

Owner: a key that belongs to a user acts as that user (`user:<pk>`: the user's browser and
scripts share runs and quotas); a key without a user is an owner of its own (`key:<id>`).
"""

import base64
import hashlib
import hmac
import logging
import re
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from channels.db import database_sync_to_async
from django.conf import settings
from django.utils import timezone

if TYPE_CHECKING:
    from streams.models import ApiKey

logger = logging.getLogger(__name__)

KEY_RE = re.compile(r"strm_([0-9a-f]{12})_[A-Za-z0-9_-]{43}")
# scrypt's interactive-login cost (16 MiB, tens of ms): paid once per cache period per key.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
# Most verdicts remembered: a flood of made-up keys must not grow the process.
CACHE_ENTRIES = 1024


@dataclass(frozen=True)
class KeyInfo:
    """A verified key: what the transports need of it."""

    id: int
    name: str
    user_id: int | None

    @property
    def owner(self) -> str:
        """Who owns runs started with the key (see the module docstring)."""
        return f"user:{self.user_id}" if self.user_id is not None else f"key:{self.id}"


def hash_key(key: str, salt: bytes | None = None) -> str:
    """`scrypt$n$r$p$salt$hash`, base64, of the whole key."""
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(key.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    b64 = base64.b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def key_matches(key: str, stored: str) -> bool:
    """Whether `key` hashes to `stored` (constant-time comparison)."""
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(
            key.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p), dklen=len(expected)
        )
    except ValueError:
        return False
    return kind == "scrypt" and hmac.compare_digest(actual, expected)


def create_key(name: str, user=None) -> tuple["ApiKey", str]:
    """Make and store a new key; return the row and the key (the only time it exists in clear)."""
    from streams.models import ApiKey

    while True:
        prefix = secrets.token_hex(6)
        if not ApiKey.objects.filter(prefix=prefix).exists():
            break
    key = f"strm_{prefix}_{secrets.token_urlsafe(32)}"
    row = ApiKey.objects.create(name=name, user=user, prefix=prefix, key_hash=hash_key(key))
    logger.info("API key %s (%s) created", row.pk, name)
    return row, key


def bearer_token(authorization: str | None) -> str | None:
    """The token of `Authorization: Bearer <token>` ("" for a Bearer without one); None for no Bearer."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip()


def verify_key(key: str) -> KeyInfo | None:
    """The key's info when it is a live key (not revoked, its user active); None otherwise."""
    from streams.models import ApiKey

    match = KEY_RE.fullmatch(key)
    if match is None:
        return None
    row = ApiKey.objects.select_related("user").filter(prefix=match.group(1)).first()
    if row is None or row.revoked or not key_matches(key, row.key_hash):
        return None
    if row.user is not None and not row.user.is_active:
        return None
    ApiKey.objects.filter(pk=row.pk).update(last_used_at=timezone.now())
    return KeyInfo(row.pk, row.name, row.user_id)


_cache: OrderedDict[bytes, tuple[float, KeyInfo | None]] = OrderedDict()


async def averify(key: str) -> KeyInfo | None:
    """verify_key() from async code, remembered for STREAMS_API_KEY_CACHE_S seconds."""
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()
    now = time.monotonic()
    hit = _cache.get(digest)
    if hit is not None and hit[0] > now:
        return hit[1]
    info = await database_sync_to_async(verify_key)(key) if KEY_RE.fullmatch(key) else None
    if info is None:
        # Prefix and hash only: the key is never logged.
        logger.info("API key refused (prefix %s)", key[5:17] if KEY_RE.fullmatch(key) else "malformed")
    _cache[digest] = (now + settings.STREAMS["API_KEY_CACHE_S"], info)
    _cache.move_to_end(digest)
    while len(_cache) > CACHE_ENTRIES:
        _cache.popitem(last=False)
    return info


def forget_keys() -> None:
    """Drop every remembered verdict (tests; a revocation that must act at once)."""
    _cache.clear()
