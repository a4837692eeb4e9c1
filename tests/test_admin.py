"""The pipeline admin: pages load, bad pipelines are refused naming the task, good ones are saved in order."""

import html
import re

import pytest
from django.urls import reverse

from streams.models import Pipeline, PipelineTask
from streams.pipelines.dag import TASK_FIELDS

pytestmark = pytest.mark.django_db

TASK_DEFAULTS = {
    "title": "",
    "provider": "simulated",
    "model": "",
    "system": "",
    "prompt": "{{ input }}",
    "depends_on": "",
    "timeout_s": "",
    "max_tokens": "",
    "temperature": "",
    "fallbacks": "",
}


def form_data(slug: str, tasks: list[dict], name: str = "Test", initial: int = 0) -> dict:
    """POST data of the pipeline add/change form with its task inline."""
    data = {
        "slug": slug,
        "name": name,
        "description": "",
        "tasks-TOTAL_FORMS": str(len(tasks)),
        "tasks-INITIAL_FORMS": str(initial),
        "tasks-MIN_NUM_FORMS": "0",
        "tasks-MAX_NUM_FORMS": "1000",
        "_save": "Save",
    }
    for i, task in enumerate(tasks):
        for field, value in {"position": i, **TASK_DEFAULTS, **task}.items():
            data[f"tasks-{i}-{field}"] = value
    return data


def page_text(response) -> str:
    """The response body with HTML entities decoded."""
    return html.unescape(response.content.decode())


def test_changelist_and_add_pages_load(admin_client):
    """A superuser sees the list (with the demo) and the add form."""
    response = admin_client.get(reverse("admin:streams_pipeline_changelist"))
    assert response.status_code == 200
    assert "demo" in page_text(response)
    response = admin_client.get(reverse("admin:streams_pipeline_add"))
    assert response.status_code == 200
    assert "tasks-TOTAL_FORMS" in page_text(response)


def test_change_page_shows_dependencies_as_keys(admin_client):
    """depends_on is edited as comma-separated keys."""
    demo = Pipeline.objects.get(slug="demo")
    response = admin_client.get(reverse("admin:streams_pipeline_change", args=[demo.pk]))
    assert response.status_code == 200
    assert 'value="task_a"' in page_text(response)


def test_anonymous_is_sent_to_login(client):
    """The admin is not public."""
    response = client.get(reverse("admin:streams_pipeline_changelist"))
    assert response.status_code == 302 and "/login/" in response["Location"]


def test_cycle_is_refused_naming_the_task(admin_client):
    """The page says which task is in which cycle, and nothing is saved."""
    pipelines, tasks = Pipeline.objects.count(), PipelineTask.objects.count()
    data = form_data(
        "cyclic",
        [
            {"key": "a", "depends_on": "b", "prompt": "{{ outputs.b }}"},
            {"key": "b", "depends_on": "a", "prompt": "{{ outputs.a }}"},
        ],
    )
    response = admin_client.post(reverse("admin:streams_pipeline_add"), data)
    assert response.status_code == 200
    assert "task 'a': dependency cycle a -> b -> a" in page_text(response)
    assert Pipeline.objects.count() == pipelines and PipelineTask.objects.count() == tasks


@pytest.mark.parametrize(
    ("task", "message"),
    [
        ({"key": "a", "provider": "nope"}, "task 'a': unknown provider 'nope'"),
        ({"key": "a", "prompt": "{% if %}"}, "task 'a': prompt template does not parse"),
        ({"key": "a", "prompt": "{{ outputs.x }}"}, "task 'a': prompt uses outputs.x"),
        ({"key": "a", "timeout_s": "0"}, "task 'a': timeout_s must be a positive number"),
        ({"key": "a", "depends_on": "ghost"}, "task 'a': depends on unknown task 'ghost'"),
    ],
)
def test_other_refusals_name_the_task(admin_client, task, message):
    """Each refusal of validate_spec appears on the page."""
    response = admin_client.post(reverse("admin:streams_pipeline_add"), form_data("bad", [task]))
    assert response.status_code == 200
    assert message in page_text(response)
    assert not Pipeline.objects.filter(slug="bad").exists()


def test_delivery_order_problem_is_refused(admin_client):
    """A task placed before its dependency is refused."""
    data = form_data(
        "order",
        [
            {"key": "late", "position": 0, "depends_on": "early", "prompt": "{{ outputs.early }}"},
            {"key": "early", "position": 1},
        ],
    )
    response = admin_client.post(reverse("admin:streams_pipeline_add"), data)
    assert "task 'late': comes before 'early', which it depends on" in page_text(response)
    assert not Pipeline.objects.filter(slug="order").exists()


def test_invalid_key_is_a_field_error(admin_client):
    """A malformed key is refused on its row."""
    response = admin_client.post(reverse("admin:streams_pipeline_add"), form_data("k", [{"key": "bad key"}]))
    assert response.status_code == 200
    assert "A key is a letter or underscore" in page_text(response)
    assert not Pipeline.objects.filter(slug="k").exists()


def test_empty_pipeline_is_refused(admin_client):
    """A pipeline needs at least one task."""
    response = admin_client.post(reverse("admin:streams_pipeline_add"), form_data("empty", []))
    assert "pipeline 'empty' has no tasks" in page_text(response)
    assert not Pipeline.objects.filter(slug="empty").exists()


def test_valid_pipeline_is_saved_in_position_order(admin_client):
    """Rows are ordered by the position fields, then renumbered 0..n-1."""
    data = form_data(
        "good",
        [
            {"key": "third", "position": 30, "depends_on": "first, second"},
            {"key": "first", "position": 10, "title": "First"},
            {"key": "second", "position": 20, "depends_on": '["first"]', "prompt": "{{ outputs.first }}"},
        ],
    )
    response = admin_client.post(reverse("admin:streams_pipeline_add"), data)
    assert response.status_code == 302, page_text(response)
    pipeline = Pipeline.objects.get(slug="good")
    rows = list(pipeline.tasks.all())
    assert [(r.key, r.position) for r in rows] == [("first", 0), ("second", 1), ("third", 2)]
    assert rows[2].depends_on == ["first", "second"] and rows[1].depends_on == ["first"]
    assert rows[0].title == "First" and rows[0].timeout_s is None
    assert pipeline.validation_errors() == []


def test_equal_positions_keep_page_order(admin_client):
    """Rows left at the same position are saved in the order they appear."""
    tasks = [{"key": k, "position": 0} for k in ("c", "a", "b")]
    response = admin_client.post(reverse("admin:streams_pipeline_add"), form_data("same", tasks))
    assert response.status_code == 302
    keys = list(Pipeline.objects.get(slug="same").tasks.values_list("key", flat=True))
    assert keys == ["c", "a", "b"]


def existing_rows(pipeline: Pipeline) -> list[dict]:
    """Inline form values of the pipeline's current tasks."""
    rows = []
    for t in pipeline.tasks.all():
        rows.append(
            {
                "id": t.pk,
                "pipeline": pipeline.pk,
                "position": t.position,
                "key": t.key,
                "title": t.title,
                "provider": t.provider,
                "model": t.model,
                "system": t.system,
                "prompt": t.prompt,
                "depends_on": ", ".join(t.depends_on),
                "timeout_s": "" if t.timeout_s is None else t.timeout_s,
                "fallbacks": "\n".join(" ".join(route) for route in t.fallbacks),
                **({"history_messages": "on"} if t.history_messages else {}),
            }
        )
    return rows


def test_deleting_a_dependency_is_refused(admin_client):
    """Removing task_a from the demo would leave task_d depending on nothing."""
    demo = Pipeline.objects.get(slug="demo")
    before = list(PipelineTask.objects.filter(pipeline=demo).values())
    rows = existing_rows(demo)
    rows[0]["DELETE"] = "on"
    data = form_data("demo", rows, name=demo.name, initial=len(rows))
    response = admin_client.post(reverse("admin:streams_pipeline_change", args=[demo.pk]), data)
    assert response.status_code == 200
    assert "task 'task_d': depends on unknown task 'task_a'" in page_text(response)
    assert list(PipelineTask.objects.filter(pipeline=demo).values()) == before


def test_editing_reorders_existing_tasks(admin_client):
    """Changing positions of existing rows reorders them; ids are kept."""
    demo = Pipeline.objects.get(slug="demo")
    ids = {t.key: t.pk for t in demo.tasks.all()}
    rows = existing_rows(demo)
    positions = {"task_a": 0, "task_c": 1, "task_b": 2, "task_d": 3}
    for row in rows:
        row["position"] = positions[row["key"]]
    data = form_data("demo", rows, name=demo.name, initial=len(rows))
    response = admin_client.post(reverse("admin:streams_pipeline_change", args=[demo.pk]), data)
    assert response.status_code == 302, page_text(response)
    assert [(t.key, t.pk) for t in demo.tasks.all()] == [
        (k, ids[k]) for k in ("task_a", "task_c", "task_b", "task_d")
    ]


def test_duplicate_keys_are_refused(admin_client):
    """Two rows with one key are refused on the page and nothing is saved."""
    data = form_data("dup", [{"key": "a"}, {"key": "a"}])
    response = admin_client.post(reverse("admin:streams_pipeline_add"), data)
    assert response.status_code == 200
    assert "task 'a': duplicate key (positions 1 and 2)" in page_text(response)
    assert not Pipeline.objects.filter(slug="dup").exists()


def test_the_task_inline_shows_every_field_of_the_pipeline_files(admin_client):
    """TASK_FIELDS is the one list: each is an input of every task row, fallbacks and history too."""
    demo = Pipeline.objects.get(slug="demo")
    text = page_text(admin_client.get(reverse("admin:streams_pipeline_change", args=[demo.pk])))
    missing = [name for name in ("position", *TASK_FIELDS) if f'name="tasks-0-{name}"' not in text]
    assert missing == []
    assert 'type="checkbox" name="tasks-0-history_messages"' in text


def test_fallbacks_and_the_history_setting_are_edited_and_saved(admin_client):
    """Fallbacks typed one `provider model` a line and history_messages are saved and shown again."""
    demo = Pipeline.objects.get(slug="demo")
    rows = existing_rows(demo)
    rows[0]["fallbacks"] = "openai gpt-4o-mini\n\n  simulated  backup-model  "
    rows[0]["history_messages"] = "on"
    data = form_data("demo", rows, name=demo.name, initial=len(rows))
    response = admin_client.post(reverse("admin:streams_pipeline_change", args=[demo.pk]), data)
    assert response.status_code == 302, page_text(response)
    first = demo.tasks.get(key="task_a")
    assert first.fallbacks == [["openai", "gpt-4o-mini"], ["simulated", "backup-model"]]
    assert first.history_messages is True
    spec = demo.to_spec().tasks[0]
    assert spec.fallbacks == (("openai", "gpt-4o-mini"), ("simulated", "backup-model"))
    assert spec.history_messages is True
    assert [t.history_messages for t in demo.tasks.all()] == [True, False, False, False]

    text = page_text(admin_client.get(reverse("admin:streams_pipeline_change", args=[demo.pk])))
    assert "openai gpt-4o-mini\nsimulated backup-model</textarea>" in text
    assert re.search(r'<input type="checkbox" name="tasks-0-history_messages"[^>]* checked>', text)
    assert not re.search(r'<input type="checkbox" name="tasks-1-history_messages"[^>]* checked>', text)

    # And back: no fallbacks, history as text only.
    rows = existing_rows(demo)
    rows[0]["fallbacks"] = ""
    del rows[0]["history_messages"]
    data = form_data("demo", rows, name=demo.name, initial=len(rows))
    response = admin_client.post(reverse("admin:streams_pipeline_change", args=[demo.pk]), data)
    assert response.status_code == 302, page_text(response)
    first.refresh_from_db()
    assert (first.fallbacks, first.history_messages) == ([], False)


@pytest.mark.parametrize(
    ("fallbacks", "message"),
    [
        ("openai", "Line 1: expected a provider and a model separated by a space, got 'openai'."),
        ("simulated m\nopenai gpt 4o", "Line 2: expected a provider and a model separated by a space"),
        ("nope some-model", "task 'a': fallbacks[0]: unknown provider 'nope' (configured: "),
        ('[["openai"]]', "Expected a list of [provider, model] pairs"),
        ("[oops", "Not a valid JSON list"),
    ],
)
def test_bad_fallbacks_are_refused_with_a_clear_message(admin_client, fallbacks, message):
    response = admin_client.post(
        reverse("admin:streams_pipeline_add"), form_data("fb", [{"key": "a", "fallbacks": fallbacks}])
    )
    assert response.status_code == 200
    assert message in page_text(response)
    assert not Pipeline.objects.filter(slug="fb").exists()


def test_fallbacks_given_as_json_are_saved(admin_client):
    data = form_data("fbjson", [{"key": "a", "fallbacks": '[["simulated", "m2"]]'}])
    response = admin_client.post(reverse("admin:streams_pipeline_add"), data)
    assert response.status_code == 302, page_text(response)
    assert Pipeline.objects.get(slug="fbjson").tasks.get().fallbacks == [["simulated", "m2"]]


def test_the_change_page_gives_its_try_it_panel_the_saved_pipeline(admin_client):
    """The panel runs what is saved: after a refused save the typed slug is not what it gets."""
    demo = Pipeline.objects.get(slug="demo")
    url = reverse("admin:streams_pipeline_change", args=[demo.pk])
    try_it = admin_client.get(url).context["try_it"]
    assert try_it == {"pipeline": "demo", "maxInputChars": 32_000, "conversationsUrl": "/api/conversations"}
    data = form_data("renamed", [{"key": "a", "provider": "nope"}], initial=0)
    refused = admin_client.post(url, data)
    assert refused.status_code == 200 and "unknown provider 'nope'" in page_text(refused)
    assert refused.context["try_it"]["pipeline"] == "demo"
    assert admin_client.get(reverse("admin:streams_pipeline_add")).context.get("try_it") is None
