"""Log lines: the run context on each (run id and task), and no secret in any (streams/redact.py).

The host sets RUN_ID in each run's main task and the orchestrator sets TASK in each task's
coroutine; asyncio copies the context into the tasks they create, so every line logged on
behalf of a run (the app's and its libraries') gets `run_id` and `task` attributes, for a
formatter or a JSON handler. A caller may also pass them with `extra=`.
"""

import contextvars
import json
import logging

from .redact import redact

RUN_ID: contextvars.ContextVar[str] = contextvars.ContextVar("streams_run_id", default="")
TASK: contextvars.ContextVar[str] = contextvars.ContextVar("streams_task", default="")


class RunContextFilter(logging.Filter):
    """Adds `run_id` and `task` to every record (empty outside a run)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Fill in what `extra=` did not set."""
        if not getattr(record, "run_id", ""):
            record.run_id = RUN_ID.get()
        if not getattr(record, "task", ""):
            record.task = TASK.get()
        return True


class PlainFormatter(logging.Formatter):
    """One line per record, secrets masked; ` run=ID task=KEY` appended when it belongs to a run."""

    def format(self, record: logging.LogRecord) -> str:
        """The usual line, plus the run context."""
        line = redact(super().format(record))
        context = "".join(
            f" {name}={value}"
            for name, value in (("run", getattr(record, "run_id", "")), ("task", getattr(record, "task", "")))
            if value
        )
        if not context:
            return line
        head, sep, rest = line.partition("\n")  # a traceback goes after the context
        return f"{head}{context}{sep}{rest}"


class JSONFormatter(logging.Formatter):
    """One JSON object per record (time, level, logger, message, run_id, task, exception), secrets masked."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        out = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "run_id": getattr(record, "run_id", "") or None,
            "task": getattr(record, "task", "") or None,
        }
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return redact(json.dumps(out, ensure_ascii=False))
