"""The simulated provider's Markdown: exact token counts, determinism, well-formed at any length,
and a default demo answer that shows a heading, a list and a closed Python block."""

import json
import os
import re
from pathlib import Path

import pytest

from streams import providers
from streams.pipelines.files import parse_pipelines
from streams.pipelines.prompts import render_prompt
from streams.providers import LLMRequest
from streams.providers.demo_text import markdown_tokens
from streams.providers.simulated import SimulatedProvider

DEMO_FILE = Path(__file__).resolve().parent.parent / "streams" / "fixtures_demo.json"
FENCE_LINE = re.compile(r"^```", re.M)


def test_every_length_is_exactly_that_many_tokens_and_well_formed():
    """Cut anywhere, the text has closed fences and ends a sentence, an item or a block."""
    for count in range(0, 400, 3):
        tokens = markdown_tokens("How do streams keep order?", "m\0s", count)
        text = "".join(tokens)
        assert len(tokens) == count and all(tokens)
        assert len(FENCE_LINE.findall(text)) % 2 == 0, (count, text[-80:])
        last_line = text.rsplit("\n", 1)[-1]
        assert count == 0 or text.endswith(("```", ".")) or last_line.startswith("- **"), text[-80:]


def test_the_same_request_always_gets_the_same_tokens_and_other_requests_others():
    prompt = "Explain the ordering gate in three sentences."
    assert markdown_tokens(prompt, "a", 120) == markdown_tokens(prompt, "a", 120)
    assert markdown_tokens(prompt, "a", 60)[:50] == markdown_tokens(prompt, "a", 120)[:50]
    assert markdown_tokens(prompt, "a", 120) != markdown_tokens(prompt, "b", 120)
    assert markdown_tokens(prompt, "a", 120) != markdown_tokens("Something else entirely", "a", 120)


def test_the_text_is_about_the_prompt_and_falls_back_to_its_own_words():
    about = "".join(markdown_tokens("Why do pipelines need backpressure?", "x", 60))
    assert "pipelines" in about.lower() and "backpressure" in about.lower()
    chinese = "".join(markdown_tokens("你好 世界", "x", 60))
    assert chinese.startswith("## ") and "```python\n" in chinese


async def test_the_default_demo_answer_shows_a_heading_a_paragraph_a_list_and_a_closed_python_block():
    """With the shipped settings (SIMULATED_TOKENS), the demo's first task through the registry."""
    (spec,) = parse_pipelines(json.loads(DEMO_FILE.read_text(encoding="utf-8")))
    answer = spec.tasks[0]
    provider = providers.get_provider(answer.provider)
    assert isinstance(provider, SimulatedProvider)
    # The shipped default (orchestrator_site/settings.py), unless the environment says otherwise.
    assert provider.tokens == int(os.environ.get("SIMULATED_TOKENS", "60"))
    request = LLMRequest(
        model=answer.model,
        prompt=render_prompt(answer.prompt, "How does a pipeline keep its answers in order?", {}),
        system=answer.system,
    )
    pieces = [p async for p in provider.stream(request) if isinstance(p, str)]
    assert pieces == provider.text_for(request) and len(pieces) == provider.tokens
    text = "".join(pieces)
    blocks = text.split("\n\n")
    assert blocks[0].startswith("## ") and "pipeline" in blocks[0].lower()
    assert blocks[1].endswith(".") and not blocks[1].startswith(("#", "-", "`"))
    items = [line for line in text.splitlines() if line.startswith("- **")]
    assert len(items) == 3
    code = re.search(r"```python\n(def \w+\(\w+\):\n(?:    .*\n)+)```", text)
    assert code is not None, text
    compile(code.group(1), "<demo>", "exec")  # readable Python is valid Python


@pytest.fixture(autouse=True)
def _fresh_providers():
    providers.reset()
    yield
    providers.reset()
