"""Who owns a run or a conversation: the user, else the Django session, else the connection."""


def owner_of(user, session_key: str | None, fallback: str) -> str:
    """Who owns runs started by this client: the user, else the session, else the connection."""
    if user is not None and getattr(user, "is_authenticated", False):
        return f"user:{user.pk}"
    if session_key:
        return f"session:{session_key}"
    return f"conn:{fallback}"
