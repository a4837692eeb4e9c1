"""The demo pipeline exists out of the box, as defined in streams/fixtures_demo.json."""

import json
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async

from streams.models import Pipeline
from streams.pipelines import catalog
from streams.pipelines.dag import topological_order
from streams.pipelines.files import import_pipelines, parse_pipelines
from streams.pipelines.validation import validate_spec
from streams.providers import provider_names

pytestmark = pytest.mark.django_db

DEMO_FILE = Path(__file__).resolve().parent.parent / "streams" / "fixtures_demo.json"


def test_demo_exists_with_four_tasks_in_order():
    """The data migration created task_a..task_d with their titles, on the simulated provider."""
    demo = Pipeline.objects.get(slug="demo")
    tasks = list(demo.tasks.all())
    assert [(t.key, t.title, t.position) for t in tasks] == [
        ("task_a", "Answer", 0),
        ("task_b", "Key points", 1),
        ("task_c", "Tone and intent", 2),
        ("task_d", "Follow-up questions", 3),
    ]
    assert {t.provider for t in tasks} == {"simulated"}


def test_demo_exercises_the_dag():
    """Follow-up questions wait for the answer and use it."""
    spec = Pipeline.objects.get(slug="demo").to_spec()
    task_d = spec.tasks[3]
    assert task_d.depends_on == ("task_a",) and "{{ outputs.task_a }}" in task_d.prompt
    assert all(t.depends_on == () for t in spec.tasks[:3])
    assert topological_order(spec) == ["task_a", "task_b", "task_c", "task_d"]


def test_demo_validates():
    """The stored demo passes the same validation as the admin and the importer."""
    demo = Pipeline.objects.get(slug="demo")
    assert validate_spec(demo.to_spec(), provider_names()) == []
    assert demo.validation_errors() == []
    demo.validate_tasks()


def test_demo_matches_its_file():
    """The database holds exactly what the fixture file defines (one definition)."""
    (from_file,) = parse_pipelines(json.loads(DEMO_FILE.read_text(encoding="utf-8")))
    assert Pipeline.objects.get(slug="demo").to_spec() == from_file


def test_load_spec_uses_one_query(django_assert_num_queries):
    """The streaming core's lookup is a single query."""
    with django_assert_num_queries(1):
        spec = catalog.load_spec("demo")
    assert spec == Pipeline.objects.get(slug="demo").to_spec()


def test_load_spec_unknown_and_empty():
    """None for an unknown slug; an empty pipeline loads with no tasks."""
    assert catalog.load_spec("nope") is None
    Pipeline.objects.create(slug="empty", name="Empty")
    spec = catalog.load_spec("empty")
    assert spec is not None and spec.tasks == () and spec.name == "Empty"


def test_list_pipelines():
    """The chat page's list: slug and name."""
    Pipeline.objects.create(slug="another", name="Another")
    assert catalog.list_pipelines() == [
        {"slug": "another", "name": "Another"},
        {"slug": "demo", "name": "Demo"},
    ]


@pytest.mark.django_db(transaction=True)
async def test_async_lookups():
    """Async callers (the consumer) get the same results; the data is made here, not taken from the demo."""
    data = {"pipelines": [{"slug": "async_p", "name": "Async", "tasks": [{"key": "only"}]}]}
    await sync_to_async(import_pipelines)(data)
    spec = await catalog.aload_spec("async_p")
    assert spec is not None and spec.order == ("only",)
    assert {"slug": "async_p", "name": "Async"} in await catalog.alist_pipelines()
