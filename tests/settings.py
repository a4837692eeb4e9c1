"""The project's settings for the test process: the local-only secret key is fine here."""

from orchestrator_site.settings import *  # noqa: F403
from orchestrator_site.settings import STREAMS

INSECURE_LOCAL = True
# Every test client shares one owner (one address, or none): caps that held across tests
# would make unrelated tests refuse each other. The counting still runs on every start and
# connection; tests of the caps set their own (tests/test_access_*.py, tests/test_quotas.py).
STREAMS = {
    **STREAMS,
    "MAX_RUNS_PER_OWNER": 100_000,
    "MAX_RUNS_PER_MINUTE": 100_000,
    "MAX_CONNECTIONS_PER_OWNER": 100_000,
}

# Run records are written by a thread of their own while tests use the database too. Django's
# default SQLite test database is a shared-cache in-memory one, whose table locks fail at once
# ("database table is locked"); a file waits for the lock (timeout) like a real deployment.
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):  # noqa: F405
    import os
    import tempfile

    DATABASES["default"]["TEST"] = {  # noqa: F405
        "NAME": os.path.join(tempfile.gettempdir(), f"streams-test-{os.getpid()}.sqlite3")
    }
