"""Prompt rendering: user input and upstream outputs are data, never template code."""

import pytest

from streams.pipelines.prompts import PromptError, check_template, referenced_outputs, render_prompt

HOSTILE = '{{ 7*7 }} {% now "Y" %} {0.__class__} <b>&amp;'


def test_hostile_input_comes_out_literally():
    """Template syntax, format fields and HTML in the input are not interpreted or escaped."""
    assert render_prompt("{{ input }}", HOSTILE, {}) == HOSTILE


def test_hostile_outputs_come_out_literally():
    """Upstream outputs are data too."""
    rendered = render_prompt("A: {{ outputs.task_a }}", "x", {"task_a": HOSTILE + " {% debug %}"})
    assert rendered == "A: " + HOSTILE + " {% debug %}"


def test_no_html_escaping():
    """Prompts are not HTML."""
    assert render_prompt("<{{ input }}>", "<b>&'\"", {}) == "<<b>&'\">"


def test_template_text_around_variables():
    """The template's own text, newlines and several variables."""
    rendered = render_prompt(
        "Q: {{ input }}\nA: {{ outputs.a }}\nB: {{ outputs.b }}", "why?", {"a": "because", "b": "so"}
    )
    assert rendered == "Q: why?\nA: because\nB: so"


def test_filters_and_tags_work_on_values():
    """The template language is available to the prompt author."""
    template = "{{ input|upper }}{% if outputs.a %} / {{ outputs.a|truncatechars:4 }}{% endif %}"
    assert render_prompt(template, "hi", {"a": "abcdef"}) == "HI / abc…"
    assert render_prompt(template, "hi", {}) == "HI"


def test_unknown_variables_render_empty():
    """Decision: an unknown variable or missing output renders as "" (Django's behaviour).

    validate_spec refuses `outputs.X` for a non-dependency, so a missing output at
    run time only happens when the caller does not pass it.
    """
    assert render_prompt("[{{ nope }}|{{ outputs.missing }}|{{ input.nope }}]", "x", {}) == "[||]"


def test_input_is_not_format_string():
    """Braces in the input are not str.format fields."""
    assert render_prompt("{{ input }}", "{input} {0} {}", {}) == "{input} {0} {}"


def test_private_attributes_are_refused():
    """Django refuses underscore attributes, so `__class__` cannot be reached from a template."""
    assert "underscores" in check_template("{{ input.__class__ }}")
    with pytest.raises(PromptError):
        render_prompt("{{ input.__class__ }}", "x", {})


@pytest.mark.parametrize(
    "template", ["{% if %}", "{{ input|nosuchfilter }}", "{% for %}", "{% nosuchtag %}", "{% if x %}"]
)
def test_syntax_errors_are_reported(template):
    """check_template returns the error; render_prompt raises PromptError."""
    problem = check_template(template)
    assert isinstance(problem, str) and problem
    with pytest.raises(PromptError):
        render_prompt(template, "x", {})


@pytest.mark.parametrize(
    "template",
    [
        '{% include "/etc/passwd" %}',
        '{% extends "base.html" %}',
        "{% load static %}",
        "{% debug %}",
        "{% url 'admin:index' %}",
        "{% csrf_token %}",
        "{% block x %}{% endblock %}",
    ],
)
def test_tags_reaching_outside_the_prompt_are_refused(template):
    """No file access, no other tag libraries, no context dump."""
    problem = check_template(template)
    assert problem and "not allowed" in problem


def test_valid_templates():
    """check_template returns None when the template compiles."""
    assert check_template("{{ input }}") is None
    assert check_template("") is None
    assert check_template("{% for line in input.splitlines %}- {{ line }}\n{% endfor %}") is None


def test_non_string_template():
    """A non-string is a clear error, not a crash."""
    assert "string" in check_template(None)


def test_referenced_outputs():
    """Keys used as outputs.X in variables and tags, not in plain text or comments."""
    template = (
        "{{ outputs.a }} outputs.b {% if outputs.c %}{% endif %}{# outputs.d #}"
        "{% verbatim %}{{ outputs.e }}{% endverbatim %}{{ myoutputs.f }}"
    )
    assert referenced_outputs(template) == {"a", "c"}


def test_render_is_cached_and_repeatable():
    """Rendering the same template twice with different data gives independent results."""
    assert render_prompt("{{ input }}!", "one", {}) == "one!"
    assert render_prompt("{{ input }}!", "two", {}) == "two!"


def test_history_is_a_value_that_validation_accepts():
    """`{{ history }}` renders the conversation's turns literally, and a pipeline may use it."""
    from streams.pipelines.specs import PipelineSpec, TaskSpec
    from streams.pipelines.validation import validate_spec

    rendered = render_prompt("{{ history }}\n{{ input }}", "now", {}, history="User: {{ x }}")
    assert rendered == "User: {{ x }}\nnow"
    assert render_prompt("[{{ history }}]", "x", {}) == "[]"
    spec = PipelineSpec("h", tasks=(TaskSpec("a", provider="simulated", prompt="{{ history }} {{ input }}"),))
    assert validate_spec(spec, ["simulated"]) == []
