"""Pipelines as files: the JSON format of the wire contract, exported from and imported into the database.

    {"pipelines": [{"slug": "demo", "name": "Demo", "description": "...", "tasks": [
      {"key": "task_a", "title": "Answer", "provider": "openai", "model": "gpt-4o-mini",
       "system": "...", "prompt": "{{ input }}", "depends_on": [], "timeout_s": 60,
       "max_tokens": null, "temperature": null}]}]}

Import creates or updates pipelines by slug and makes their tasks match the file
exactly (a field left out takes its default); pipelines absent from the file are
left alone. A file with any problem changes nothing. The functions take the model
classes as parameters so that data migrations can pass historical models.
"""

import logging
import math
import re
from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.db import transaction

from .dag import TASK_FIELDS, PipelineError, task_from_fields
from .specs import PipelineSpec, task_defaults
from .validation import validate_spec

__all__ = ["PipelineError", "check_pipelines", "export_pipelines", "import_pipelines", "parse_pipelines"]

logger = logging.getLogger(__name__)

SLUG_RE = re.compile(r"[-a-zA-Z0-9_]{1,64}")  # used with fullmatch: "$" would accept "demo\n"

PIPELINE_KEYS = ("slug", "name", "description", "tasks")
PIPELINE_REQUIRED = ("slug", "tasks")

# Expected JSON kind per task field; "number?" and "integer?" also accept null.
TASK_KINDS = {
    "key": "string",
    "title": "string",
    "provider": "string",
    "model": "string",
    "system": "string",
    "prompt": "string",
    "depends_on": "strings",
    "timeout_s": "number?",
    "max_tokens": "integer?",
    "temperature": "number?",
    "fallbacks": "routes",
    "history_messages": "boolean",
}

# Column sizes, checked here because SQLite would not refuse a longer value and Postgres would.
MAX_LENGTHS = {"slug": 64, "name": 200, "key": 64, "title": 200, "provider": 64, "model": 200}

# What a task left out of a file gets; the provider's default comes from settings instead.
TASK_DEFAULTS = {name: value for name, value in task_defaults().items() if name != "provider"}


def _kind(value: Any) -> str:
    """The JSON name of a Python value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "list"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _models(pipeline_model, task_model):
    """The given model classes, or the app's own."""
    if pipeline_model is None or task_model is None:
        from ..models import Pipeline, PipelineTask

        pipeline_model = pipeline_model or Pipeline
        task_model = task_model or PipelineTask
    return pipeline_model, task_model


def _check_value(path: str, kind: str, value: Any) -> list[str]:
    """Problems of one field value against its expected kind."""
    if kind.endswith("?"):
        if value is None:
            return []
        kind = kind[:-1]
    if kind == "string":
        ok = isinstance(value, str)
        expected = "a string"
    elif kind == "strings":
        if not isinstance(value, list):
            return [f"{path}: expected a list of task keys, got {_kind(value)}"]
        return [
            f"{path}[{i}]: expected a string, got {_kind(item)}"
            for i, item in enumerate(value)
            if not isinstance(item, str)
        ]
    elif kind == "routes":
        if not isinstance(value, list):
            return [f"{path}: expected a list of [provider, model] pairs, got {_kind(value)}"]
        return [
            f"{path}[{i}]: expected a [provider, model] pair of strings"
            for i, item in enumerate(value)
            if not (isinstance(item, list) and len(item) == 2 and all(isinstance(v, str) for v in item))
        ]
    elif kind == "boolean":
        ok = isinstance(value, bool)
        expected = "true or false"
    elif kind == "integer":
        ok = isinstance(value, int) and not isinstance(value, bool)
        expected = "an integer or null"
    else:
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        expected = "a number or null"
    if not ok:
        return [f"{path}: expected {expected}, got {_kind(value)}"]
    return []


def _check_length(path: str, field: str, value: Any) -> list[str]:
    """A problem when a string is longer than its column."""
    limit = MAX_LENGTHS.get(field)
    if limit and isinstance(value, str) and len(value) > limit:
        return [f"{path}: at most {limit} characters, got {len(value)}"]
    return []


def _unknown_keys(path: str, obj: dict, allowed: Iterable[str]) -> list[str]:
    """One problem per field that the format does not know."""
    allowed = tuple(allowed)
    return [
        f"{path}: unknown field {name!r} (allowed: {', '.join(allowed)})"
        for name in obj
        if name not in allowed
    ]


def _parse_task(path: str, raw: Any) -> tuple[dict | None, list[str]]:
    """The task's complete field values, or the problems of its shape."""
    if not isinstance(raw, dict):
        return None, [f"{path}: expected an object, got {_kind(raw)}"]
    errors = _unknown_keys(path, raw, TASK_FIELDS)
    if "key" not in raw:
        errors.append(f"{path}.key: required")
    for field, kind in TASK_KINDS.items():
        if field in raw:
            errors += _check_value(f"{path}.{field}", kind, raw[field])
            errors += _check_length(f"{path}.{field}", field, raw[field])
    if errors:
        return None, errors
    fields = {"provider": settings.STREAMS["DEFAULT_PROVIDER"], **TASK_DEFAULTS, **raw}
    fields["depends_on"] = list(fields["depends_on"])
    if fields["timeout_s"] is not None:
        fields["timeout_s"] = float(fields["timeout_s"])
    if fields["temperature"] is not None:
        fields["temperature"] = float(fields["temperature"])
    return fields, []


def _parse_pipeline(path: str, raw: Any) -> tuple[PipelineSpec | None, list[str]]:
    """The pipeline's spec, or the problems of its shape."""
    if not isinstance(raw, dict):
        return None, [f"{path}: expected an object, got {_kind(raw)}"]
    errors = _unknown_keys(path, raw, PIPELINE_KEYS)
    errors += [f"{path}.{name}: required" for name in PIPELINE_REQUIRED if name not in raw]
    slug = raw.get("slug")
    if "slug" in raw and not (isinstance(slug, str) and SLUG_RE.fullmatch(slug)):
        errors.append(f"{path}.slug: expected 1 to 64 letters, digits, hyphens or underscores, got {slug!r}")
    for field in ("name", "description"):
        if field in raw:
            errors += _check_value(f"{path}.{field}", "string", raw[field])
            errors += _check_length(f"{path}.{field}", field, raw[field])
    tasks = []
    raw_tasks = raw.get("tasks", [])
    if not isinstance(raw_tasks, list):
        errors.append(f"{path}.tasks: expected a list, got {_kind(raw_tasks)}")
        raw_tasks = []
    for i, raw_task in enumerate(raw_tasks):
        fields, task_errors = _parse_task(f"{path}.tasks[{i}]", raw_task)
        errors += task_errors
        if fields is not None:
            tasks.append(task_from_fields(fields))
    if errors:
        return None, errors
    name = raw.get("name") or slug
    return PipelineSpec(slug=slug, name=name, description=raw.get("description", ""), tasks=tuple(tasks)), []


def parse_pipelines(data: Any, providers: Iterable[str] | None = None) -> list[PipelineSpec]:
    """Validate a whole file (shape, then every pipeline); raise PipelineError listing every problem."""
    if providers is None:
        from ..providers import provider_names

        providers = provider_names()
    providers = list(providers)
    if not isinstance(data, dict):
        raise PipelineError(f'the file must be a JSON object with a "pipelines" list, got {_kind(data)}')
    errors = _unknown_keys("(top level)", data, ("pipelines",))
    if "pipelines" not in data:
        errors.append("pipelines: required")
    raw_pipelines = data.get("pipelines", [])
    if not isinstance(raw_pipelines, list):
        errors.append(f"pipelines: expected a list, got {_kind(raw_pipelines)}")
        raw_pipelines = []
    specs: list[PipelineSpec] = []
    first_seen: dict[str, int] = {}
    for i, raw in enumerate(raw_pipelines):
        path = f"pipelines[{i}]"
        spec, shape_errors = _parse_pipeline(path, raw)
        errors += shape_errors
        if spec is None:
            continue
        if spec.slug in first_seen:
            errors.append(
                f"{path}.slug: duplicate slug {spec.slug!r} (also pipelines[{first_seen[spec.slug]}])"
            )
            continue
        first_seen[spec.slug] = i
        errors += [f"{path} ({spec.slug}): {problem}" for problem in validate_spec(spec, providers)]
        specs.append(spec)
    if errors:
        raise PipelineError(errors)
    return specs


def check_pipelines(data: Any, providers: Iterable[str] | None = None) -> list[str]:
    """Every problem of a file, without touching the database; empty when it would import."""
    try:
        parse_pipelines(data, providers)
    except PipelineError as exc:
        return exc.errors
    return []


def _task_values(position: int, task, task_model) -> dict[str, Any]:
    """Column values of a task row for a TaskSpec at `position`.

    Only the fields the model has: a data migration's historical model may predate some.
    """
    columns = {f.name for f in task_model._meta.get_fields()}
    values = {name: getattr(task, name) for name in TASK_FIELDS if name in columns}
    values["depends_on"] = list(task.depends_on)
    if "fallbacks" in values:
        values["fallbacks"] = [list(route) for route in task.fallbacks]
    values["position"] = position
    return values


def _apply(spec: PipelineSpec, pipeline_model, task_model, alias: str) -> str:
    """Create or update one pipeline so that it matches `spec`; return a one-line summary."""
    pipeline = pipeline_model.objects.using(alias).select_for_update().filter(slug=spec.slug).first()
    if pipeline is None:
        pipeline = pipeline_model.objects.using(alias).create(
            slug=spec.slug, name=spec.name, description=spec.description
        )
        for position, task in enumerate(spec.tasks):
            task_model.objects.using(alias).create(
                pipeline=pipeline, **_task_values(position, task, task_model)
            )
        return f"{spec.slug}: created with {len(spec.tasks)} task(s)"

    pipeline_changes = [f for f in ("name", "description") if getattr(pipeline, f) != getattr(spec, f)]
    existing = {row.key: row for row in task_model.objects.using(alias).filter(pipeline=pipeline)}
    wanted = {task.key for task in spec.tasks}
    # Delete first so that a key that moves between rows can never collide with itself.
    removed = [row.pk for key, row in existing.items() if key not in wanted]
    if removed:
        task_model.objects.using(alias).filter(pk__in=removed).delete()
    added = changed = 0
    for position, task in enumerate(spec.tasks):
        values = _task_values(position, task, task_model)
        row = existing.get(task.key)
        if row is None:
            task_model.objects.using(alias).create(pipeline=pipeline, **values)
            added += 1
            continue
        # Only rows that differ are written, so importing an export is a true no-op.
        diff = [name for name, value in values.items() if getattr(row, name) != value]
        if diff:
            for name in diff:
                setattr(row, name, values[name])
            row.save(using=alias, update_fields=diff)
            changed += 1

    if not (pipeline_changes or added or changed or removed):
        return f"{spec.slug}: unchanged"
    pipeline.name, pipeline.description = spec.name, spec.description
    pipeline.save(using=alias)  # also bumps `updated` when only tasks changed
    parts = []
    if pipeline_changes:
        parts.append(", ".join(pipeline_changes) + " changed")
    parts += [
        f"{n} task(s) {what}"
        for n, what in ((added, "added"), (changed, "changed"), (len(removed), "removed"))
        if n
    ]
    return f"{spec.slug}: updated ({'; '.join(parts)})"


def import_pipelines(
    data: Any,
    *,
    providers: Iterable[str] | None = None,
    pipeline_model=None,
    task_model=None,
    using: str = "default",
) -> list[str]:
    """Create or update the file's pipelines atomically; on any problem raise PipelineError."""
    pipeline_model, task_model = _models(pipeline_model, task_model)
    specs = parse_pipelines(data, providers)
    with transaction.atomic(using=using):
        summary = [_apply(spec, pipeline_model, task_model, using) for spec in specs]
    logger.info("imported pipelines: %s", "; ".join(summary) or "none")
    return summary


def export_pipelines(*, pipeline_model=None, task_model=None, using: str = "default") -> dict:
    """Every pipeline in the file format, by slug, tasks in delivery order."""
    pipeline_model, _ = _models(pipeline_model, task_model)
    pipelines = []
    for pipeline in pipeline_model.objects.using(using).order_by("slug").prefetch_related("tasks"):
        tasks = sorted(pipeline.tasks.all(), key=lambda t: (t.position, t.pk))
        pipelines.append(
            {
                "slug": pipeline.slug,
                "name": pipeline.name,
                "description": pipeline.description,
                "tasks": [
                    {
                        name: list(getattr(t, name) or [])
                        if name in ("depends_on", "fallbacks")
                        else getattr(t, name)
                        for name in TASK_FIELDS
                    }
                    for t in tasks
                ],
            }
        )
    return {"pipelines": pipelines}
