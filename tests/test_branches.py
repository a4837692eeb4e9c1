"""The tree of a conversation's versions (pure): branches, versions, a parent that is gone."""

import json

import pytest

from streams.protocol import ClientError
from streams.records.branches import Tree
from streams.session.inputs import parse_client_frame

LIMITS = {"max_bytes": 64 * 1024, "max_input_chars": 32_000}


def tree_of(*runs: tuple[str, str]) -> Tree:
    """(run_id, parent) pairs in the order they started."""
    tree = Tree()
    for at, (run_id, parent) in enumerate(runs):
        tree.add(run_id, parent, float(at))
    return tree


# q1 -> a2 -> a3; a2 regenerated as b2 -> b3; b2 regenerated again as c2 (newest).
EDITED = tree_of(("q1", ""), ("a2", "q1"), ("a3", "a2"), ("b2", "q1"), ("b3", "b2"), ("c2", "q1"))


def test_the_current_branch_runs_through_the_newest_run():
    assert EDITED.branch() == ["q1", "c2"]
    assert EDITED.newest() == "c2"


def test_the_branch_through_a_run_continues_to_its_newest_descendant():
    assert EDITED.branch("a2") == ["q1", "a2", "a3"]
    assert EDITED.branch("b2") == ["q1", "b2", "b3"]
    assert EDITED.branch("b3") == ["q1", "b2", "b3"]
    assert EDITED.branch("q1") == ["q1", "c2"]  # its newest descendant is the newest run


def test_the_versions_of_a_turn_are_the_runs_that_follow_the_same_run_oldest_first():
    assert EDITED.versions("b2") == ["a2", "b2", "c2"]
    assert EDITED.versions("a3") == ["a3"]
    assert EDITED.versions("q1") == ["q1"]


def test_a_parent_that_is_gone_starts_a_branch():
    tree = tree_of(("late", "removed-by-retention"), ("next", "late"))
    assert tree.parent_of("late") == ""
    assert tree.branch() == ["late", "next"] and tree.versions("late") == ["late"]


def test_corrupt_rows_that_form_a_cycle_never_loop():
    tree = tree_of(("x", "y"), ("y", "x"))
    assert sorted(tree.path_to("x")) == ["x", "y"]
    assert sorted(tree.branch("x")) == ["x", "y"]


def test_an_empty_conversation_has_an_empty_branch():
    assert Tree().branch() == [] and Tree().newest() is None


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"replaces": "abc"}, "bad_request"),  # needs conversation
        ({"after": "abc"}, "bad_request"),
        ({"conversation": "c", "replaces": "abc", "after": "abc"}, "bad_request"),
        ({"conversation": "c", "replaces": 7}, "bad_request"),
        ({"conversation": "c", "after": None}, "bad_request"),
        ({"conversation": "c", "replaces": "../x"}, "unknown_run"),
        ({"conversation": "c", "after": "x" * 129}, "unknown_run"),
    ],
)
def test_a_replaces_or_after_that_can_name_no_run_of_the_conversation_is_refused(fields, code):
    frame = {"type": "run.start", "pipeline": "demo", "input": "hi", "ref": "r", **fields}
    with pytest.raises(ClientError) as refused:
        parse_client_frame(json.dumps(frame), **LIMITS)
    assert (refused.value.code, refused.value.ref) == (code, "r") and refused.value.message


def test_a_well_formed_replaces_or_after_passes():
    for name in ("replaces", "after"):
        frame = {"type": "run.start", "pipeline": "demo", "input": "hi", "conversation": "c", name: "r1"}
        assert parse_client_frame(json.dumps(frame), **LIMITS)[name] == "r1"


def test_a_new_version_of_the_first_turn_starts_a_branch_of_its_own():
    tree = tree_of(("q1", ""), ("a2", "q1"), ("q1b", ""))
    assert tree.versions("q1") == ["q1", "q1b"]
    assert tree.branch() == ["q1b"] and tree.branch("q1") == ["q1", "a2"]
