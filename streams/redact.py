"""Masking of secrets in text: the password of any URL, API keys and Bearer tokens (no Django imports)."""

import re

MASK = "********"
# scheme://user:PASSWORD@host -> scheme://user:********@host (the user name stays readable).
URL_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@'\"<>]*:)[^\s@/'\"<>]+(?=@)")
# strm_<prefix>_<secret> -> strm_<prefix>_******** (the prefix names the key in the admin).
API_KEY = re.compile(r"\b(?P<head>strm_[0-9a-f]{12}_)[A-Za-z0-9_\-]+")
BEARER = re.compile(r"(?P<head>\bBearer\s+)(?!strm_)[^\s'\"<>]+", re.I)


def redact(text: str) -> str:
    """`text` with every URL password, API key and Bearer token masked."""
    if "://" in text:
        text = URL_PASSWORD.sub(rf"\g<head>{MASK}", text)
    if "strm_" in text:
        text = API_KEY.sub(rf"\g<head>{MASK}", text)
    if "earer" in text or "EARER" in text:
        text = BEARER.sub(rf"\g<head>{MASK}", text)
    return text
