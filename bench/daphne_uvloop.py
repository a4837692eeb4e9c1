"""daphne with its Twisted reactor on uvloop instead of the stdlib loop (an experiment).

    python -m bench.daphne_uvloop -b 127.0.0.1 -p 8000 orchestrator_site.asgi:application

daphne.server creates its loop with asyncio.new_event_loop() when it is imported, so the
policy must be set before daphne is: hence a launcher rather than a setting.
"""

import asyncio

import uvloop

asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())

from daphne.cli import CommandLineInterface  # noqa: E402

if __name__ == "__main__":
    CommandLineInterface.entrypoint()
