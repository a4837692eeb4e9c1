"""Pipelines as files: export, import, refusal without side effects, management commands."""

import copy
import io
import json

import pytest
from django.core.management import CommandError, call_command

from streams.models import Pipeline, PipelineTask
from streams.pipelines.dag import TASK_FIELDS
from streams.pipelines.files import (
    PipelineError,
    check_pipelines,
    export_pipelines,
    import_pipelines,
)

pytestmark = pytest.mark.django_db


def snapshot() -> tuple[list[dict], list[dict]]:
    """Every pipeline and task row with every column (ids and timestamps included)."""
    return (
        list(Pipeline.objects.order_by("id").values()),
        list(PipelineTask.objects.order_by("id").values()),
    )


def task(key: str, **fields) -> dict:
    """A task entry of the file format."""
    return {"key": key, "title": key.upper(), "provider": "simulated", "prompt": "{{ input }}", **fields}


def pipeline_file(*pipelines: dict) -> dict:
    """A whole file."""
    return {"pipelines": list(pipelines)}


TWO = {
    "slug": "two",
    "name": "Two",
    "tasks": [
        task("first"),
        task("second", depends_on=["first"], prompt="{{ input }} / {{ outputs.first }}", timeout_s=5),
    ],
}


@pytest.fixture
def two():
    """The pipeline `two` imported."""
    import_pipelines(pipeline_file(TWO))
    return Pipeline.objects.get(slug="two")


def test_export_format(two):
    """Every pipeline by slug, every task field, JSON-serialisable."""
    data = export_pipelines()
    assert [p["slug"] for p in data["pipelines"]] == ["demo", "two"]
    exported = data["pipelines"][1]
    assert exported["name"] == "Two" and exported["description"] == ""
    assert [t["key"] for t in exported["tasks"]] == ["first", "second"]
    assert all(tuple(t) == TASK_FIELDS for t in exported["tasks"])
    assert exported["tasks"][1]["depends_on"] == ["first"] and exported["tasks"][1]["timeout_s"] == 5
    assert json.loads(json.dumps(data)) == data


def test_export_then_import_is_a_no_op(two):
    """Importing an export writes nothing: same rows, same ids, same timestamps."""
    before = snapshot()
    data = export_pipelines()
    assert import_pipelines(copy.deepcopy(data)) == ["demo: unchanged", "two: unchanged"]
    assert snapshot() == before
    assert export_pipelines() == data


def test_import_creates_with_defaults():
    """Fields left out take their defaults; positions follow the file."""
    summary = import_pipelines(pipeline_file({"slug": "mini", "tasks": [{"key": "only"}, {"key": "next"}]}))
    assert summary == ["mini: created with 2 task(s)"]
    pipeline = Pipeline.objects.get(slug="mini")
    assert pipeline.name == "mini"
    rows = list(pipeline.tasks.all())
    assert [(r.key, r.position) for r in rows] == [("only", 0), ("next", 1)]
    assert rows[0].provider == "simulated" and rows[0].prompt == "{{ input }}" and rows[0].depends_on == []
    assert rows[0].timeout_s is None and rows[0].title == ""


def test_import_updates_in_place_and_replaces_tasks(two):
    """Kept keys keep their rows; removed keys go; new keys come; order and fields match the file."""
    ids = {t.key: t.pk for t in two.tasks.all()}
    updated_before = two.updated
    changed = copy.deepcopy(TWO)
    changed["name"] = "Two, renamed"
    changed["tasks"] = [
        task("new_one"),
        {**changed["tasks"][0], "title": "First, retitled"},
    ]
    summary = import_pipelines(pipeline_file(changed))
    assert summary == ["two: updated (name changed; 1 task(s) added; 1 task(s) changed; 1 task(s) removed)"]
    two.refresh_from_db()
    assert two.name == "Two, renamed" and two.updated > updated_before
    rows = list(two.tasks.all())
    assert [(r.key, r.position, r.title) for r in rows] == [
        ("new_one", 0, "NEW_ONE"),
        ("first", 1, "First, retitled"),
    ]
    assert rows[1].pk == ids["first"]
    assert not PipelineTask.objects.filter(pk=ids["second"]).exists()


def test_import_leaves_other_pipelines_alone(two):
    """Pipelines absent from the file are not deleted."""
    import_pipelines(pipeline_file({"slug": "other", "tasks": [task("a")]}))
    assert set(Pipeline.objects.values_list("slug", flat=True)) == {"demo", "two", "other"}


def test_import_accepts_model_classes():
    """The data migration passes (historical) model classes; the real ones work the same."""
    import_pipelines(pipeline_file(TWO), pipeline_model=Pipeline, task_model=PipelineTask)
    assert Pipeline.objects.filter(slug="two").exists()


CYCLE = {
    "slug": "loop",
    "tasks": [
        task("a", depends_on=["b"], prompt="{{ outputs.b }}"),
        task("b", depends_on=["a"], prompt="{{ outputs.a }}"),
    ],
}


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (pipeline_file(CYCLE), "pipelines[0] (loop): task 'a': dependency cycle a -> b -> a"),
        (
            pipeline_file({"slug": "p", "tasks": [task("a", provider="nope")]}),
            "pipelines[0] (p): task 'a': unknown provider 'nope'",
        ),
        (
            pipeline_file({"slug": "p", "tasks": [task("a", depends_on=["b"]), task("b")]}),
            "pipelines[0] (p): task 'a': comes before 'b', which it depends on",
        ),
        (
            pipeline_file({"slug": "p", "tasks": [task("a", depends_on=["zz"])]}),
            "pipelines[0] (p): task 'a': depends on unknown task 'zz'",
        ),
        ([], 'the file must be a JSON object with a "pipelines" list, got list'),
        ({}, "pipelines: required"),
        ({"pipelines": {}}, "pipelines: expected a list, got object"),
        ({"pipelines": [], "extra": 1}, "(top level): unknown field 'extra'"),
        ({"pipelines": ["demo"]}, "pipelines[0]: expected an object, got string"),
        ({"pipelines": [{"tasks": []}]}, "pipelines[0].slug: required"),
        ({"pipelines": [{"slug": "a b", "tasks": []}]}, "pipelines[0].slug: expected 1 to 64 letters"),
        # Regression: "$" with match() accepted a trailing newline (as migration 0003 fixed for keys).
        ({"pipelines": [{"slug": "demo\n", "tasks": []}]}, "pipelines[0].slug: expected 1 to 64 letters"),
        ({"pipelines": [{"slug": "p"}]}, "pipelines[0].tasks: required"),
        ({"pipelines": [{"slug": "p", "tasks": {}}]}, "pipelines[0].tasks: expected a list, got object"),
        ({"pipelines": [{"slug": "p", "tasks": [], "owner": "x"}]}, "pipelines[0]: unknown field 'owner'"),
        ({"pipelines": [{"slug": "p", "name": 3, "tasks": []}]}, "pipelines[0].name: expected a string"),
        (
            pipeline_file({"slug": "p", "tasks": [task("a"), task("b"), {**task("c"), "depends_on": "a"}]}),
            "pipelines[0].tasks[2].depends_on: expected a list of task keys, got string",
        ),
        (
            pipeline_file({"slug": "p", "tasks": [{**task("a"), "depends_on": [1]}]}),
            "pipelines[0].tasks[0].depends_on[0]: expected a string, got number",
        ),
        (pipeline_file({"slug": "p", "tasks": [{"title": "x"}]}), "pipelines[0].tasks[0].key: required"),
        (pipeline_file({"slug": "p", "tasks": [{**task("a"), "colour": 1}]}), "unknown field 'colour'"),
        (
            pipeline_file({"slug": "p", "tasks": [{**task("a"), "timeout_s": "60"}]}),
            "pipelines[0].tasks[0].timeout_s: expected a number or null, got string",
        ),
        (
            pipeline_file({"slug": "p", "tasks": [{**task("a"), "timeout_s": True}]}),
            "pipelines[0].tasks[0].timeout_s: expected a number or null, got boolean",
        ),
        (
            pipeline_file({"slug": "p", "tasks": [{**task("a"), "max_tokens": 1.5}]}),
            "pipelines[0].tasks[0].max_tokens: expected an integer or null",
        ),
        (
            pipeline_file({"slug": "p", "tasks": [{**task("a"), "timeout_s": float("nan")}]}),
            "pipelines[0].tasks[0].timeout_s: expected a number or null",
        ),
        (pipeline_file({"slug": "p", "tasks": [task("a", title="x" * 201)]}), "at most 200 characters"),
        (pipeline_file({"slug": "p", "tasks": []}), "pipelines[0] (p): pipeline 'p' has no tasks"),
        (
            pipeline_file({"slug": "p", "tasks": [task("a")]}, {"slug": "p", "tasks": [task("a")]}),
            "pipelines[1].slug: duplicate slug 'p' (also pipelines[0])",
        ),
        (
            pipeline_file({"slug": "p", "tasks": [task("a", timeout_s=0)]}),
            "pipelines[0] (p): task 'a': timeout_s must be a positive number",
        ),
    ],
)
def test_invalid_file_changes_nothing(two, data, expected):
    """Every refusal names where the problem is, and the database is untouched."""
    before = snapshot()
    with pytest.raises(PipelineError) as info:
        import_pipelines(data)
    assert any(expected in problem for problem in info.value.errors), info.value.errors
    assert snapshot() == before
    assert any(expected in problem for problem in check_pipelines(data))


def test_valid_pipeline_next_to_invalid_one_is_not_imported(two):
    """All or nothing: the valid pipeline of a bad file is not created, the existing one not changed."""
    before = snapshot()
    renamed = {**TWO, "name": "Renamed"}
    with pytest.raises(PipelineError):
        import_pipelines(pipeline_file(renamed, {"slug": "fresh", "tasks": [task("a")]}, CYCLE))
    assert snapshot() == before


def test_every_problem_is_listed():
    """One refusal lists the problems of every pipeline; a badly shaped pipeline shows its shape problems."""
    data = pipeline_file(
        CYCLE,
        {"slug": "p", "tasks": [task("a", provider="nope"), task("b", timeout_s=-1)]},
        {"slug": "q", "tasks": [task("a"), {**task("b"), "depends_on": "a", "model": 1}]},
    )
    problems = check_pipelines(data)
    assert len(problems) == 5, problems
    assert check_pipelines(pipeline_file(TWO)) == []


def write(tmp_path, data, name="pipelines.json") -> str:
    """Write `data` as JSON; return the path."""
    path = tmp_path / name
    path.write_text(json.dumps(data), encoding="utf-8")
    return str(path)


def test_import_command_prints_summary(tmp_path):
    """The command imports and prints one line per pipeline."""
    out = io.StringIO()
    call_command("import_pipelines", write(tmp_path, pipeline_file(TWO)), stdout=out)
    assert out.getvalue().strip() == "two: created with 2 task(s)"
    assert Pipeline.objects.filter(slug="two").exists()


def test_import_command_refuses_bad_file(tmp_path, two):
    """Every problem goes to stderr, the command fails non-zero, nothing changes."""
    before = snapshot()
    data = pipeline_file(CYCLE, {"slug": "p", "tasks": [task("a", provider="nope")]})
    err = io.StringIO()
    with pytest.raises(CommandError) as info:
        call_command("import_pipelines", write(tmp_path, data), stdout=io.StringIO(), stderr=err)
    assert info.value.returncode != 0
    assert "2 problem(s); nothing was changed" in str(info.value)
    assert "task 'a': dependency cycle a -> b -> a" in err.getvalue()
    assert "unknown provider 'nope'" in err.getvalue()
    assert snapshot() == before


def test_import_command_check_only(tmp_path):
    """--check validates without importing."""
    out = io.StringIO()
    call_command("import_pipelines", write(tmp_path, pipeline_file(TWO)), "--check", stdout=out)
    assert out.getvalue().endswith("OK\n")
    assert not Pipeline.objects.filter(slug="two").exists()
    with pytest.raises(CommandError):
        call_command(
            "import_pipelines", write(tmp_path, pipeline_file(CYCLE)), "--check", stderr=io.StringIO()
        )


def test_import_command_reads_stdin(monkeypatch):
    """`-` reads the file from standard input."""
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(pipeline_file(TWO))))
    call_command("import_pipelines", "-", stdout=io.StringIO())
    assert Pipeline.objects.filter(slug="two").exists()


def test_import_command_bad_json_and_missing_file(tmp_path):
    """Unreadable input is a clean CommandError."""
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(CommandError, match="not valid JSON"):
        call_command("import_pipelines", str(bad))
    with pytest.raises(CommandError, match="cannot read"):
        call_command("import_pipelines", str(tmp_path / "absent.json"))


def test_round_trip_through_the_commands(tmp_path, two):
    """export --output, damage the database, import the file: everything is back; stdout export agrees."""
    path = tmp_path / "export.json"
    call_command("export_pipelines", "--output", str(path))
    saved = json.loads(path.read_text(encoding="utf-8"))
    assert saved == export_pipelines()

    PipelineTask.objects.filter(pipeline=two, key="second").delete()
    PipelineTask.objects.filter(pipeline__slug="demo", key="task_b").update(title="Damaged", position=9)
    Pipeline.objects.filter(slug="demo").update(description="Damaged")

    out = io.StringIO()
    call_command("import_pipelines", str(path), stdout=out)
    assert "demo: updated" in out.getvalue() and "two: updated" in out.getvalue()

    stdout = io.StringIO()
    call_command("export_pipelines", stdout=stdout)
    assert stdout.getvalue() == path.read_text(encoding="utf-8")
    assert stdout.getvalue().startswith('{\n  "pipelines": [')
    assert json.loads(stdout.getvalue()) == saved
