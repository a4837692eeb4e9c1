"""Pipeline validation and ordering (pure: no database)."""

import pytest

from streams.pipelines.dag import PipelineError, task_from_fields, topological_order
from streams.pipelines.specs import PipelineSpec, TaskSpec
from streams.pipelines.validation import validate_spec

PROVIDERS = ["simulated", "openai"]


def spec(*tasks: TaskSpec) -> PipelineSpec:
    """A pipeline `p` of the given tasks."""
    return PipelineSpec(slug="p", name="P", tasks=tasks)


def t(key: str, *deps: str, **fields) -> TaskSpec:
    """A simulated task; prompts use every dependency so that they are well formed."""
    prompt = fields.pop("prompt", "{{ input }}" + "".join(f" {{{{ outputs.{d} }}}}" for d in deps))
    return TaskSpec(key=key, depends_on=deps, prompt=prompt, **fields)


def only_error(s: PipelineSpec) -> str:
    """The single error of `s`."""
    errors = validate_spec(s, PROVIDERS)
    assert len(errors) == 1, errors
    return errors[0]


def test_valid_pipeline_has_no_errors():
    """The demo shape (A; B, C independent; D after A) is valid."""
    s = spec(t("task_a"), t("task_b"), t("task_c"), t("task_d", "task_a"))
    assert validate_spec(s, PROVIDERS) == []


def test_empty_pipeline_is_refused():
    """A pipeline without tasks cannot run."""
    assert "has no tasks" in only_error(spec())


def test_duplicate_key():
    """Two tasks with one key."""
    error = only_error(spec(t("a"), t("b"), t("a")))
    assert error.startswith("task 'a':") and "duplicate key" in error and "positions 1 and 3" in error


@pytest.mark.parametrize("key", ["", "1abc", "has space", "dash-key", "é", "a" * 65])
def test_invalid_key(key):
    """Keys must be identifiers of at most 64 characters."""
    error = only_error(spec(t(key)))
    assert error.startswith(f"task {key!r}:") and "invalid key" in error


def test_longest_valid_key():
    """64 characters are allowed; a leading underscore too."""
    assert validate_spec(spec(t("a" * 64), t("_x9")), PROVIDERS) == []


def test_unknown_dependency():
    """A dependency that is not a task of the pipeline."""
    error = only_error(spec(t("a", "ghost", prompt="{{ input }}")))
    assert error == "task 'a': depends on unknown task 'ghost'"


def test_self_dependency():
    """A task cannot wait for itself."""
    error = only_error(spec(t("a", "a", prompt="{{ input }}")))
    assert error == "task 'a': depends on itself"


def test_repeated_dependency():
    """Listing a dependency twice is a typo worth reporting."""
    error = only_error(spec(t("a"), t("b", "a", "a")))
    assert error.startswith("task 'b':") and "more than once" in error


def test_cycle_is_named():
    """The message shows the cycle, starting from a task in it."""
    error = only_error(spec(t("a", "c"), t("b", "a"), t("c", "b")))
    assert error == "task 'a': dependency cycle a -> c -> b -> a"


def test_two_task_cycle_and_unrelated_task():
    """Only the cycle is reported; the task outside it is fine."""
    errors = validate_spec(spec(t("x"), t("a", "b"), t("b", "a")), PROVIDERS)
    assert errors == ["task 'a': dependency cycle a -> b -> a"]


def test_two_separate_cycles_are_both_reported():
    """Every cycle gets its own message."""
    errors = validate_spec(spec(t("a", "b"), t("b", "a"), t("c", "d"), t("d", "c")), PROVIDERS)
    assert sorted(e for e in errors if "cycle" in e) == [
        "task 'a': dependency cycle a -> b -> a",
        "task 'c': dependency cycle c -> d -> c",
    ]


def test_delivery_order_before_dependency():
    """A task must come after the tasks it depends on."""
    error = only_error(spec(t("a", "b"), t("b")))
    assert error.startswith("task 'a': comes before 'b', which it depends on")


def test_unknown_provider():
    """Providers must be configured."""
    error = only_error(spec(t("a", provider="nope")))
    assert error.startswith("task 'a': unknown provider 'nope'") and "simulated" in error


def test_provider_list_is_any_iterable():
    """Providers may be given as a generator."""
    assert validate_spec(spec(t("a")), (p for p in ["simulated"])) == []


@pytest.mark.parametrize("field", ["prompt", "system"])
def test_template_that_does_not_parse(field):
    """A template syntax error names the task and the field."""
    error = only_error(spec(t("a", **{field: "{% if %}"})))
    assert error.startswith(f"task 'a': {field} template does not parse:")


def test_forbidden_tag_is_refused():
    """Tags that read files are refused at validation."""
    error = only_error(spec(t("a", prompt='{% include "secrets.txt" %}')))
    assert error.startswith("task 'a': prompt template does not parse") and "include" in error


@pytest.mark.parametrize("field", ["prompt", "system"])
def test_outputs_of_a_non_dependency(field):
    """`outputs.X` needs X in depends_on, even when X is a task of the pipeline."""
    fields = {"prompt": "{{ input }}", field: "see {{ outputs.a }}"}
    error = only_error(spec(t("a"), t("b", **fields)))
    assert error == f"task 'b': {field} uses outputs.a but 'a' is not in its depends_on"


def test_outputs_in_block_tags_count_and_plain_text_does_not():
    """References inside `{% if %}` are checked; the words `outputs.a` in prose are not a reference."""
    ok = spec(t("a"), t("b", prompt="Mention outputs.a literally. {{ input }}"))
    assert validate_spec(ok, PROVIDERS) == []
    bad = spec(t("a"), t("b", prompt="{% if outputs.a %}yes{% endif %}"))
    assert "uses outputs.a" in only_error(bad)


def test_empty_prompt():
    """A blank prompt would send nothing."""
    assert only_error(spec(t("a", prompt="  "))) == "task 'a': prompt is empty"


@pytest.mark.parametrize("timeout", [0, -1, 0.0, float("nan"), float("inf"), True, "5"])
def test_bad_timeout(timeout):
    """Timeouts must be positive, finite numbers."""
    error = only_error(spec(t("a", timeout_s=timeout)))
    assert error.startswith("task 'a': timeout_s must be a positive number")


def test_good_optional_numbers():
    """Positive timeout and max_tokens, zero temperature are fine; None means default."""
    s = spec(t("a", timeout_s=0.5, max_tokens=1, temperature=0), t("b", timeout_s=None))
    assert validate_spec(s, PROVIDERS) == []


@pytest.mark.parametrize(("field", "value"), [("max_tokens", 0), ("max_tokens", 1.5), ("temperature", -0.1)])
def test_bad_optional_numbers(field, value):
    """max_tokens must be a positive integer, temperature >= 0."""
    error = only_error(spec(t("a", **{field: value})))
    assert error.startswith(f"task 'a': {field} must be")


def test_all_problems_are_reported_at_once():
    """Validation does not stop at the first problem."""
    s = spec(t("a", provider="x", timeout_s=0), t("b", "ghost", prompt="{% if %}"))
    errors = validate_spec(s, PROVIDERS)
    assert len(errors) == 4
    assert sum(e.startswith("task 'a'") for e in errors) == 2
    assert sum(e.startswith("task 'b'") for e in errors) == 2


def test_topological_order_follows_delivery_order_when_possible():
    """Ties are broken by delivery position."""
    s = spec(t("a"), t("b"), t("c", "a"), t("d", "a", "b"))
    assert topological_order(s) == ["a", "b", "c", "d"]


def test_topological_order_puts_dependencies_first():
    """Even when delivery order is not topological, dependencies come first."""
    s = spec(t("d", "c"), t("a"), t("c", "b"), t("b"))
    order = topological_order(s)
    assert order == ["a", "b", "c", "d"]


def test_topological_order_refuses_cycles_and_unknown_keys():
    """Unrunnable graphs raise PipelineError naming the task."""
    with pytest.raises(PipelineError, match=r"task 'a': dependency cycle a -> b -> a"):
        topological_order(spec(t("a", "b"), t("b", "a")))
    with pytest.raises(PipelineError, match=r"task 'a': depends on unknown task 'z'"):
        topological_order(spec(t("a", "z")))
    with pytest.raises(PipelineError, match=r"task 'a': depends on itself"):
        topological_order(spec(t("a", "a")))


def test_pipeline_error_keeps_every_message():
    """PipelineError is a ValueError carrying the list of problems."""
    exc = PipelineError(["one", "two"])
    assert isinstance(exc, ValueError)
    assert exc.errors == ["one", "two"] and str(exc) == "one\ntwo"
    assert PipelineError("single").errors == ["single"]


def test_task_from_fields_converts_depends_on():
    """Lists from JSON or forms become the spec's tuple."""
    task = task_from_fields({"key": "a", "depends_on": ["b"], "unrelated": 1})
    assert task == TaskSpec(key="a", depends_on=("b",))


def test_a_key_with_a_trailing_newline_is_refused():
    from streams.pipelines.specs import PipelineSpec, TaskSpec
    from streams.pipelines.validation import validate_spec

    errors = validate_spec(
        PipelineSpec("p", tasks=(TaskSpec(key="task_a\n", provider="simulated"),)), ["simulated"]
    )
    assert errors and "task_a" in errors[0]
