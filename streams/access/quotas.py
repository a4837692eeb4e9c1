"""Quotas that hold across connections and instances: runs in flight, runs started per minute, connections.

Counted in Redis when a Redis topology is configured, so that every instance sees the same
counts (quota_redis.py), else in this process's memory (quota_base.py, which also holds the
rules, the slots and their renewals).
"""

from .quota_base import (
    CONNECTIONS,
    RUNS,
    STARTS,
    LimitExceeded,
    Limits,
    MemoryQuotas,
    Quotas,
    ResumeCounter,
    Slot,
)
from .quota_redis import RedisQuotas

__all__ = [
    "CONNECTIONS",
    "RUNS",
    "STARTS",
    "LimitExceeded",
    "Limits",
    "MemoryQuotas",
    "Quotas",
    "RedisQuotas",
    "ResumeCounter",
    "Slot",
    "get_quotas",
    "reset_quotas",
]

_quotas: Quotas | None = None


def get_quotas() -> Quotas:
    """The process's quotas: Redis when a topology is configured, else memory."""
    global _quotas
    if _quotas is None:
        from ..store.topology import get_clients, get_topology

        _quotas = RedisQuotas(get_clients()) if get_topology().configured else MemoryQuotas()
    return _quotas


def reset_quotas() -> None:
    """Forget the process's quotas (settings changed, e.g. in tests)."""
    global _quotas
    _quotas = None
