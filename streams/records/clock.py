"""The records' clock: epoch seconds that never go backwards, and their datetimes."""

import math
import time
from datetime import UTC, datetime, timedelta

# Wall-clock seconds anchored once to the monotonic clock: trace times never go backwards
# within a process, whatever NTP does to the wall clock meanwhile.
EPOCH_OFFSET = time.time() - time.monotonic()
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def now() -> float:
    """Epoch seconds, monotonic within the process."""
    return EPOCH_OFFSET + time.monotonic()


def to_datetime(ts: float, *, up: bool = False) -> datetime:
    """`ts` as an aware datetime on a whole microsecond, 1 us below (or above, `up`) it.

    The margin makes the stored start strictly earlier (the end strictly later) than any
    trace time recorded in between, whatever float rounding does to either.
    """
    us = math.ceil(ts * 1e6) + 1 if up else math.floor(ts * 1e6) - 1
    return _EPOCH + timedelta(microseconds=us)
