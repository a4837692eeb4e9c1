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
