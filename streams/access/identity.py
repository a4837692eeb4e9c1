"""Who a connection or request is: the owner of its runs and the owner its quotas are counted for."""

from dataclasses import dataclass

from streams.access.owners import identity_of

from .clients import request_address, scope_address
from .keys import KeyInfo


@dataclass(frozen=True)
class Client:
    """One connection's or request's identity, for both transports."""

    # "key:<id>" / "user:<pk>" / "session:<hash>", or None for a client with neither.
    identity: str | None
    # Its address (behind a trusted proxy: the forwarded one).
    address: str
    # Logged in, or a valid API key: may connect when anonymous use is switched off.
    authenticated: bool
    api_key: KeyInfo | None = None

    def owner_for(self, fallback: str) -> str:
        """The owner of its runs; a client with no lasting identity owns them as `conn:<fallback>`."""
        return self.identity or f"conn:{fallback}"

    @property
    def quota_owner(self) -> str:
        """Whom its runs and connections are counted for: its identity, else its address."""
        return self.identity or f"addr:{self.address}"


def make_client(user, session_key: str | None, api_key: KeyInfo | None, address: str) -> Client:
    """The identity of a client: its API key first, then its user, then its session."""
    if api_key is not None:
        return Client(api_key.owner, address, True, api_key)
    authenticated = bool(user is not None and getattr(user, "is_authenticated", False))
    return Client(identity_of(user, session_key), address, authenticated)


def scope_client(scope) -> Client:
    """The identity of a WebSocket connection (after AuthMiddlewareStack and the access middleware)."""
    session = scope.get("session")
    return make_client(
        scope.get("user"),
        session.session_key if session else None,
        scope.get("api_key"),
        scope_address(scope),
    )


async def request_client(request, api_key: KeyInfo | None) -> Client:
    """The identity of an HTTP request."""
    user = await request.auser() if hasattr(request, "auser") else None
    session = getattr(request, "session", None)
    return make_client(
        user, session.session_key if session is not None else None, api_key, request_address(request)
    )
