"""What an upstream's answer does to its task: the orchestrator with real SDK providers and local servers.

A broken or cut-short answer fails its own task only (the others complete); a complete one
puts its finish reason into the task's stats.
"""

from streams.pipelines.specs import PipelineSpec, TaskSpec
from streams.providers import openai_provider
from streams.runs.orchestrator import execute
from tests.support.openai_server import OpenAIServer, Script
from tests.support.providers import fast_config

KEY_ENV = "TEST_PROVIDER_TASKS_KEY"


class Sink:
    """Records each task's end."""

    def __init__(self):
        self.ends: dict[str, tuple[str, dict]] = {}

    def started(self, task):
        pass

    def delta(self, task, text):
        pass

    def finished(self, task, *, stats=None, error=None):
        self.ends[task] = ("failed", error) if error else ("completed", stats)


async def test_each_broken_answer_fails_only_its_task_and_complete_ones_report_their_finish_reason(
    monkeypatch,
):
    """Four tasks on four servers: cut by max_tokens, non-string content, [DONE] without a
    finish_reason, and a normal answer. Two complete (with their reasons), two fail with codes."""
    monkeypatch.setenv(KEY_ENV, "sk-test-tasks-0123456789")
    scripts = {
        "length": Script(text="cut off here", finish_reason="length"),
        "badtype": Script(chunks=["fine ", 7]),
        "interrupted": Script(text="half an", finish_reason=None),
        "stop": Script(text="all done"),
    }
    servers = {name: OpenAIServer(script).start() for name, script in scripts.items()}
    providers = {
        name: openai_provider.build(name, fast_config(srv.base_url, KEY_ENV)) for name, srv in servers.items()
    }
    try:
        sink = Sink()
        spec = PipelineSpec("p", tasks=tuple(TaskSpec(name, provider=name) for name in scripts))
        outputs = await execute(spec, "go", sink, default_timeout_s=10, providers=providers.get)
    finally:
        for provider in providers.values():
            await provider.aclose()
        for srv in servers.values():
            srv.stop()
    assert sink.ends["length"][0] == "completed" and sink.ends["length"][1]["finish_reason"] == "length"
    assert sink.ends["stop"][0] == "completed" and sink.ends["stop"][1]["finish_reason"] == "stop"
    assert sink.ends["badtype"][0] == "failed" and sink.ends["badtype"][1]["code"] == "bad_response"
    assert sink.ends["interrupted"][0] == "failed" and sink.ends["interrupted"][1]["code"] == "incomplete"
    assert outputs == {"length": "cut off here", "stop": "all done"}
