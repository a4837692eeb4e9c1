"""`python -m streams.serve`: the app under uvicorn (websockets-sansio), draining on SIGTERM.

uvicorn's own shutdown closes every WebSocket with 1012 at once and waits for HTTP responses,
then sends the lifespan shutdown; this server drains first (streams/serving.py), so clients
get their runs' last frames and a 1001 close, and only then lets uvicorn finish.
"""

import argparse
import logging

import uvicorn

APP = "orchestrator_site.asgi:application"

logger = logging.getLogger(__name__)


class DrainingServer(uvicorn.Server):
    """uvicorn.Server whose shutdown stops listening, drains, then shuts down as uvicorn does."""

    async def shutdown(self, sockets=None) -> None:
        """Stop accepting connections, drain the app, then uvicorn's shutdown (nothing left to cut)."""
        from .serving import shutdown_app

        for server in self.servers:
            server.close()
        logger.info("SIGTERM (uvicorn): draining before connections close")
        await shutdown_app()
        await super().shutdown(sockets=sockets)


def config(argv: list[str] | None = None) -> uvicorn.Config:
    """The uvicorn configuration from the command line."""
    parser = argparse.ArgumentParser(prog="python -m streams.serve", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--loop", default="auto", help="auto, asyncio or uvloop")
    parser.add_argument("--http", default="auto", help="auto, h11 or httptools")
    parser.add_argument(
        "--ws",
        default="websockets-sansio",
        choices=("websockets-sansio", "wsproto"),
        help="uvicorn's WebSocket protocol (both wait for the socket on send; wsproto needs its package)",
    )
    parser.add_argument(
        "--ws-deflate",
        action="store_true",
        help="per-message deflate (off: a zlib call per frame and its buffers per connection)",
    )
    parser.add_argument("--log-level", default="info")
    parser.add_argument(
        "--proxy-headers", action="store_true", help="trust X-Forwarded-* from --forwarded-allow-ips"
    )
    parser.add_argument("--forwarded-allow-ips", default="127.0.0.1")
    args = parser.parse_args(argv)
    return uvicorn.Config(
        APP,
        host=args.host,
        port=args.port,
        # Its send waits while the socket is full, so the outbox sees a slow reader
        # (docs/deployment.md). Deflate is off unless asked for: docs/deployment.md says why.
        ws=args.ws,
        ws_per_message_deflate=args.ws_deflate,
        loop=args.loop,
        http=args.http,
        lifespan="on",
        log_level=args.log_level,
        proxy_headers=args.proxy_headers,
        forwarded_allow_ips=args.forwarded_allow_ips,
    )


def main(argv: list[str] | None = None) -> None:
    """Serve until SIGTERM / SIGINT, then drain and stop."""
    DrainingServer(config(argv)).run()


if __name__ == "__main__":
    main()
