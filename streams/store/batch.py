"""Commands that many coroutines of one event loop send to Redis, gathered into one pipeline."""

import asyncio

Command = tuple  # ("XADD", key, ...): the arguments of one Redis command


class CommandBatcher:
    """Sends the commands submitted while a pipeline is in flight as the next pipeline.

    A pipeline round trip costs redis-py about four times as much CPU as one more command
    in it, and every run's live token is a round trip: under load many runs submit in the
    same loop iteration, so they share one. One pipeline at a time, in submission order,
    so a run's frames can never overtake each other even if its sender stopped waiting.
    """

    def __init__(self, client):
        self.client = client
        self._queue: list[tuple[list[Command], asyncio.Future]] = []
        self._sender: asyncio.Task | None = None

    async def execute(self, commands: list[Command]) -> list:
        """Send `commands` (in order, with other coroutines' commands) and return their replies."""
        future = asyncio.get_running_loop().create_future()
        self._queue.append((commands, future))
        if self._sender is None:
            # Started as a task, so that everything submitted in this loop iteration joins.
            self._sender = asyncio.create_task(self._send())
        return await future

    async def _send(self) -> None:
        """Send queued commands, one pipeline per batch, until the queue is empty."""
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                await self._send_batch(batch)
        finally:
            self._sender = None

    async def _send_batch(self, batch: list[tuple[list[Command], asyncio.Future]]) -> None:
        """One pipeline: a command's error fails only its own submitter; a lost connection fails all."""
        pipe = self.client.pipeline(transaction=False)
        for commands, _ in batch:
            for args in commands:
                pipe.execute_command(*args)
        try:
            replies = await pipe.execute(raise_on_error=False)
        except asyncio.CancelledError:
            _fail(batch, ConnectionError("the Redis batch was cancelled (shutdown)"))
            raise
        except Exception as exc:
            _fail(batch, exc)
            return
        start = 0
        for commands, future in batch:
            own = replies[start : start + len(commands)]
            start += len(commands)
            if future.done():  # its submitter was cancelled
                continue
            error = next((r for r in own if isinstance(r, Exception)), None)
            if error is None:
                future.set_result(own)
            else:
                future.set_exception(error)


def _fail(batch: list[tuple[list[Command], asyncio.Future]], exc: BaseException) -> None:
    """Give every waiting submitter the batch's error."""
    for _, future in batch:
        if not future.done():
            future.set_exception(exc)
