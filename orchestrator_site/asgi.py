"""ASGI entry point: Django for HTTP, Channels for WebSockets under /ws/."""

import gc
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orchestrator_site.settings")
from orchestrator_site.security import require_secret_key

# A server must not start with the public default key (unless DEBUG or DJANGO_INSECURE_LOCAL).
require_secret_key()
# Django must be set up before anything imports models or consumers.
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402

from streams.access.middleware import AccessMiddleware, ClientMiddleware  # noqa: E402
from streams.routing import websocket_urlpatterns  # noqa: E402
from streams.serving import ServedApp  # noqa: E402

# The chat page's JS and CSS, served by the app itself unless a proxy serves STATIC_ROOT.
http_app = ASGIStaticFilesHandler(django_asgi_app) if settings.SERVE_STATIC else django_asgi_app

# ServedApp: the lifespan protocol and a drain on SIGTERM (streams/serving.py).
application = ServedApp(
    ProtocolTypeRouter(
        {
            "http": http_app,
            # Origin / API key, then session and user, then identity, anonymous rule, connection quota.
            "websocket": AccessMiddleware(
                AuthMiddlewareStack(ClientMiddleware(URLRouter(websocket_urlpatterns)))
            ),
        }
    )
)

# Import the provider SDKs now (openai takes about a second), not on the first request.
from streams.providers import warm_up  # noqa: E402

warm_up()
# Everything loaded so far lives for the whole process: keep it out of the collector, whose
# full passes otherwise stall the event loop for >100 ms under load.
gc.freeze()
# Runs in flight still hold ~1,000 objects each, and a full pass over them stalled the loop
# 20-70 ms at 110 sessions, several times in 10 s; each is now 10x rarer (young passes are
# unchanged: they stay ~1 ms and collect nearly all cyclic garbage).
gen0, gen1, _ = gc.get_threshold()
gc.set_threshold(gen0, gen1, 100)
