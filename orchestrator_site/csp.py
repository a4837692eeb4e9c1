"""The Content-Security-Policy header (django-csp), with this host's WebSocket in connect-src."""

from dataclasses import replace

from csp.middleware import CSPMiddleware, PolicyParts
from django.core.exceptions import DisallowedHost


class HostSocketCSPMiddleware(CSPMiddleware):
    """django-csp's middleware; connect-src also names ws:// and wss:// of the request's host.

    CSP 3 browsers match 'self' to the page's own ws(s) origin, older Safari does not; the host
    is one ALLOWED_HOSTS accepted, so it is never a visitor's choice of another site.
    """

    def get_policy_parts(self, request, response, report_only: bool = False) -> PolicyParts:
        """The configured policy, plus this host's sockets."""
        parts = super().get_policy_parts(request, response, report_only)
        try:
            host = request.get_host()
        except DisallowedHost:
            return parts  # the 400 answering a foreign Host header gets the policy without it
        update = dict(parts.update or {})
        update["connect-src"] = [*update.get("connect-src", []), f"ws://{host}", f"wss://{host}"]
        return replace(parts, update=update)
