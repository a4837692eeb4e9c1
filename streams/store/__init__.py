"""Storage of runs in Redis (or memory): the run log, command batching and the publisher."""

from redis.exceptions import RedisError

# What a failure of the message layer or the run log looks like; anything else is a bug.
LAYER_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError)
