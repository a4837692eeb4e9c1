"""Plain, immutable descriptions of pipelines and tasks that the streaming core runs on."""

from dataclasses import MISSING, dataclass, field, fields


@dataclass(frozen=True)
class TaskSpec:
    """One LLM call of a pipeline, as the orchestrator sees it."""

    key: str
    title: str = ""
    provider: str = "simulated"
    model: str = ""
    system: str = ""
    prompt: str = "{{ input }}"
    depends_on: tuple[str, ...] = ()
    timeout_s: float | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    # (provider, model) routes tried in order when the task fails before its first token.
    fallbacks: tuple[tuple[str, str], ...] = ()
    # The conversation's earlier turns as chat messages before the prompt (else only {{ history }}).
    history_messages: bool = False


@dataclass(frozen=True)
class PipelineSpec:
    """A pipeline: its tasks in delivery order."""

    slug: str
    name: str = ""
    description: str = ""
    tasks: tuple[TaskSpec, ...] = field(default_factory=tuple)

    @property
    def order(self) -> tuple[str, ...]:
        """Task keys in delivery order."""
        return tuple(t.key for t in self.tasks)


def task_defaults() -> dict:
    """Each TaskSpec field's default: the one home of task defaults (files and models use it)."""
    return {
        f.name: [list(x) if isinstance(x, tuple) else x for x in f.default]
        if isinstance(f.default, tuple)
        else f.default
        for f in fields(TaskSpec)
        if f.default is not MISSING
    }
