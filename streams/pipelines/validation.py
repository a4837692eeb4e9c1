"""Pipeline validation as the app does it: the pure DAG checks with the prompt engine's template checks."""

from collections.abc import Iterable

from . import dag, prompts
from .specs import PipelineSpec


def validate_spec(spec: PipelineSpec, providers: Iterable[str]) -> list[str]:
    """Every problem of `spec`, each message naming its task; empty when the pipeline is runnable."""
    return dag.validate_spec(spec, providers, templates=prompts)
