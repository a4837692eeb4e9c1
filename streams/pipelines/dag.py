"""Pipeline validation and ordering: pure functions over PipelineSpec, nothing of Django.

Template checks are the template engine's business: `validate_spec` takes them as a
parameter (streams/pipelines/validation.py passes the prompt engine's).
"""

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from .specs import PipelineSpec, TaskSpec

__all__ = [
    "KEY_PATTERN",
    "KEY_RE",
    "TASK_FIELDS",
    "PipelineError",
    "task_from_fields",
    "topological_order",
    "validate_spec",
]

KEY_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}\Z"  # \Z, not $: "$" accepts a trailing newline
KEY_RE = re.compile(KEY_PATTERN)

# The editable fields of a task, in the order the file format and the admin show them.
TASK_FIELDS = (
    "key",
    "title",
    "provider",
    "model",
    "system",
    "prompt",
    "depends_on",
    "timeout_s",
    "max_tokens",
    "temperature",
    "fallbacks",
    "history_messages",
)


class Templates(Protocol):
    """What validation needs to know of prompt templates."""

    def check_template(self, template: str) -> str | None:
        """Why the template does not compile, or None."""

    def referenced_outputs(self, template: str) -> set[str]:
        """Keys X that the template uses as outputs.X."""


class PipelineError(ValueError):
    """A pipeline (or a file of pipelines) was refused; `errors` lists every problem."""

    def __init__(self, errors: Iterable[str] | str):
        """Keep every problem; the message lists them one per line."""
        self.errors = [errors] if isinstance(errors, str) else list(errors)
        super().__init__("\n".join(self.errors))


def task_from_fields(fields: Mapping[str, Any]) -> TaskSpec:
    """Build a TaskSpec from a mapping of TASK_FIELDS (missing ones take the spec defaults)."""
    values = {name: fields[name] for name in TASK_FIELDS if name in fields}
    if "depends_on" in values:
        values["depends_on"] = tuple(values["depends_on"] or ())
    if "fallbacks" in values:
        values["fallbacks"] = tuple(tuple(route) for route in values["fallbacks"] or ())
    if values.get("history_messages") is None:
        values.pop("history_messages", None)
    return TaskSpec(**values)


def _is_number(value: Any) -> bool:
    """True for int/float but not bool (JSON true must not pass as 1)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def _cycles(tasks: tuple[TaskSpec, ...]) -> list[list[str]]:
    """Distinct dependency cycles (each as [a, b, ..., a]) among known keys, self-loops excluded."""
    known = {t.key for t in tasks}
    graph = {t.key: [d for d in dict.fromkeys(t.depends_on) if d in known and d != t.key] for t in tasks}
    state: dict[str, int] = {}  # 1: on the current path, 2: fully explored
    path: list[str] = []
    found: list[list[str]] = []
    seen: set[frozenset[str]] = set()

    def visit(node: str) -> None:
        """Depth-first search that records a cycle at every back edge."""
        state[node] = 1
        path.append(node)
        for dep in graph[node]:
            if state.get(dep) == 1:
                cycle = [*path[path.index(dep) :], dep]
                members = frozenset(cycle)
                if members not in seen:
                    seen.add(members)
                    found.append(cycle)
            elif dep not in state:
                visit(dep)
        path.pop()
        state[node] = 2

    for key in graph:  # delivery order, so messages are stable
        if key not in state:
            visit(key)
    return found


def _check_task_fields(task: TaskSpec, providers: set[str], templates: Templates) -> list[str]:
    """Problems of one task that need no other task to see."""
    name = f"task {task.key!r}"
    errors = []
    configured = ", ".join(sorted(providers)) or "none"
    if task.provider not in providers:
        errors.append(f"{name}: unknown provider {task.provider!r} (configured: {configured})")
    for index, route in enumerate(task.fallbacks):
        if not (isinstance(route, tuple) and len(route) == 2 and all(isinstance(v, str) for v in route)):
            errors.append(f"{name}: fallbacks[{index}] must be a [provider, model] pair")
        elif route[0] not in providers:
            errors.append(
                f"{name}: fallbacks[{index}]: unknown provider {route[0]!r} (configured: {configured})"
            )
    for field in ("system", "prompt"):
        template = getattr(task, field)
        problem = templates.check_template(template)
        if problem:
            errors.append(f"{name}: {field} template does not parse: {problem}")
            continue
        for ref in sorted(templates.referenced_outputs(template)):
            if ref not in task.depends_on:
                errors.append(f"{name}: {field} uses outputs.{ref} but {ref!r} is not in its depends_on")
    if isinstance(task.prompt, str) and not task.prompt.strip():
        errors.append(f"{name}: prompt is empty")
    if task.timeout_s is not None and not (
        _is_number(task.timeout_s) and math.isfinite(task.timeout_s) and task.timeout_s > 0
    ):
        errors.append(f"{name}: timeout_s must be a positive number of seconds, got {task.timeout_s!r}")
    if task.max_tokens is not None and not (
        isinstance(task.max_tokens, int) and not isinstance(task.max_tokens, bool) and task.max_tokens > 0
    ):
        errors.append(f"{name}: max_tokens must be a positive integer, got {task.max_tokens!r}")
    if task.temperature is not None and not (
        _is_number(task.temperature) and math.isfinite(task.temperature) and task.temperature >= 0
    ):
        errors.append(f"{name}: temperature must be a number >= 0, got {task.temperature!r}")
    return errors


def validate_spec(spec: PipelineSpec, providers: Iterable[str], templates: Templates) -> list[str]:
    """Every problem of `spec`, each message naming its task; empty when the pipeline is runnable."""
    providers = set(providers)
    errors: list[str] = []
    if not spec.tasks:
        errors.append(f"pipeline {spec.slug!r} has no tasks")
    position: dict[str, int] = {}
    for index, task in enumerate(spec.tasks):
        name = f"task {task.key!r}"
        if not isinstance(task.key, str) or not KEY_RE.match(task.key):
            errors.append(
                f"{name}: invalid key; a key is a letter or underscore followed by up to 63 "
                "letters, digits or underscores"
            )
        if task.key in position:
            errors.append(f"{name}: duplicate key (positions {position[task.key] + 1} and {index + 1})")
        else:
            position[task.key] = index

    for task in spec.tasks:
        name = f"task {task.key!r}"
        seen_deps: set[str] = set()
        for dep in task.depends_on:
            if dep in seen_deps:
                errors.append(f"{name}: depends on {dep!r} more than once")
                continue
            seen_deps.add(dep)
            if dep == task.key:
                errors.append(f"{name}: depends on itself")
            elif dep not in position:
                errors.append(f"{name}: depends on unknown task {dep!r}")
        errors.extend(_check_task_fields(task, providers, templates))

    cycles = _cycles(spec.tasks)
    in_cycle: set[str] = set()
    for cycle in cycles:
        in_cycle.update(cycle)
        errors.append(f"task {cycle[0]!r}: dependency cycle {' -> '.join(cycle)}")

    for task in spec.tasks:
        for dep in dict.fromkeys(task.depends_on):
            if dep == task.key or dep not in position:
                continue
            # Inside a cycle some edge always points forward; the cycle message says it better.
            if task.key in in_cycle and dep in in_cycle:
                continue
            if position[dep] > position[task.key]:
                errors.append(
                    f"task {task.key!r}: comes before {dep!r}, which it depends on; "
                    f"delivery order must put {dep!r} first"
                )
    return errors


def topological_order(spec: PipelineSpec) -> list[str]:
    """Task keys so that every task follows its dependencies, ties broken by delivery order."""
    position = {t.key: i for i, t in enumerate(spec.tasks)}
    problems = [f"task {k!r}: duplicate key" for k in position if spec.order.count(k) > 1]
    for task in spec.tasks:
        for dep in task.depends_on:
            if dep == task.key:
                problems.append(f"task {task.key!r}: depends on itself")
            elif dep not in position:
                problems.append(f"task {task.key!r}: depends on unknown task {dep!r}")
    if problems:
        raise PipelineError(problems)
    remaining = {t.key: set(t.depends_on) for t in spec.tasks}
    order: list[str] = []
    while remaining:
        ready = [k for k, deps in remaining.items() if not deps]
        if not ready:
            raise PipelineError(
                [f"task {c[0]!r}: dependency cycle {' -> '.join(c)}" for c in _cycles(spec.tasks)]
            )
        key = min(ready, key=position.__getitem__)
        order.append(key)
        del remaining[key]
        for deps in remaining.values():
            deps.discard(key)
    return order
