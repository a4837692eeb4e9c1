"""Read access to pipelines for the streaming core: specs by slug and the list for the chat page."""

from asgiref.sync import sync_to_async

from .models import Pipeline, PipelineTask
from .specs import PipelineSpec

__all__ = ["alist_pipelines", "aload_spec", "list_pipelines", "load_spec"]


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


async def aload_spec(slug: str) -> PipelineSpec | None:
    """load_spec for async callers (the ORM runs in the thread Django expects)."""
    return await sync_to_async(load_spec)(slug)


async def alist_pipelines() -> list[dict]:
    """list_pipelines for async callers."""
    return await sync_to_async(list_pipelines)()
