"""Who owns a run or a conversation: the user, else the Django session (hashed), else the connection."""

import hashlib


def identity_of(user, session_key: str | None) -> str | None:
    """The lasting identity of a client: its user, else its session, else None."""
    if user is not None and getattr(user, "is_authenticated", False):
        return f"user:{user.pk}"
    if session_key:
        return session_owner(session_key)
    return None


def session_owner(session_key: str) -> str:
    """The owner string of a session: a hash, so that the key itself never leaves the process."""
    return f"session:{hashlib.sha256(session_key.encode()).hexdigest()[:32]}"


def owner_of(user, session_key: str | None, fallback: str) -> str:
    """Who owns runs started by this client: the user, else the session, else the connection."""
    return identity_of(user, session_key) or f"conn:{fallback}"
