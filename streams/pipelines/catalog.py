"""Read access to pipelines for the streaming core: specs by slug and the list for the chat page."""

import time

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async

from ..models import Pipeline, PipelineTask
from .specs import PipelineSpec

__all__ = ["alist_pipelines", "aload_spec", "forget_specs", "list_pipelines", "load_spec"]


def load_spec(slug: str) -> PipelineSpec | None:
    """The pipeline `slug` as a spec, or None when there is none (one query when it has tasks)."""
    rows = list(
        PipelineTask.objects.filter(pipeline__slug=slug).select_related("pipeline").order_by("position", "id")
    )
    if rows:
        pipeline = rows[0].pipeline
        return PipelineSpec(
            slug=pipeline.slug,
            name=pipeline.name,
            description=pipeline.description,
            tasks=tuple(row.to_spec() for row in rows),
        )
    # No task rows: either no such pipeline or an empty one; a second query tells which.
    pipeline = Pipeline.objects.filter(slug=slug).first()
    return None if pipeline is None else PipelineSpec(pipeline.slug, pipeline.name, pipeline.description)


def list_pipelines() -> list[dict]:
    """Every pipeline as {"slug", "name"}, by slug."""
    return [
        {"slug": slug, "name": name}
        for slug, name in Pipeline.objects.order_by("slug").values_list("slug", "name")
    ]


# slug -> (read at, spec). Every run.start needs its pipeline's spec; reading it costs a
# query and a thread hop (a quarter of the CPU at saturation), so specs are kept briefly.
_specs: dict[str, tuple[float, PipelineSpec | None]] = {}
# How long a spec read here may be used; saves in this process clear it at once (signals),
# saves on other instances are seen after this long.
SPEC_TTL_S = 5.0


async def aload_spec(slug: str) -> PipelineSpec | None:
    """load_spec for async callers, from a short-lived cache."""
    now = time.monotonic()
    hit = _specs.get(slug)
    if hit is not None and now - hit[0] < SPEC_TTL_S:
        return hit[1]
    spec = await database_sync_to_async(load_spec)(slug)
    if len(_specs) >= 1000:  # slugs come from clients: never let them grow the cache
        _specs.clear()
    _specs[slug] = (now, spec)
    return spec


def forget_specs(**_signal) -> None:
    """A pipeline or task changed: read specs afresh."""
    _specs.clear()


async def alist_pipelines() -> list[dict]:
    """list_pipelines for async callers."""
    return await sync_to_async(list_pipelines)()
