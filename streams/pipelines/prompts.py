"""Prompt templates: Django template syntax over `{{ input }}`, `{{ outputs.KEY }}` and `{{ history }}`.

Decisions others rely on:

- The user's input and the upstream outputs are context *values*, never template
  source, so whatever they contain (`{{ x }}`, `{% if %}`, `{0.__class__}`, `<b>&`)
  comes out literally. Nothing is HTML-escaped: prompts are not HTML.
- `{{ history }}` is the conversation's earlier turns as plain text (streams.records.
  conversations.History.text); empty for a conversation's first turn.
- Unknown variables render as the empty string (Django's usual behaviour). The
  one mistake that matters, `{{ outputs.X }}` for a task X that is not a
  dependency, is refused statically by `streams.pipelines.dag.validate_spec`, using
  `referenced_outputs` below.
- Only a safe subset of the built-in tags is available: no `{% load %}`,
  `{% include %}`, `{% extends %}`, `{% debug %}`, `{% url %}`, `{% csrf_token %}`;
  the engine has no loaders, so no template can read a file.
"""

import re
from collections.abc import Mapping
from functools import lru_cache

from django.template import (
    Context,
    Engine,
    Library,
    Template,
    TemplateSyntaxError,
    defaultfilters,
    defaulttags,
)
from django.template.base import Lexer, TokenType

__all__ = ["PromptError", "check_template", "referenced_outputs", "render_prompt", "uses_history"]

# Tags that reach outside the prompt (files, other libraries, the URLconf, the whole
# context dump) have no business in an LLM prompt.
FORBIDDEN_TAGS = frozenset({"load", "debug", "url", "csrf_token"})
# Loader tags are simply not registered; named here only for a clearer refusal message.
REFUSED_TAGS = FORBIDDEN_TAGS | {"include", "extends", "block", "ssi"}

OUTPUT_REF_RE = re.compile(r"(?<![\w.])outputs\.([A-Za-z0-9_]+)")
HISTORY_REF_RE = re.compile(r"(?<![\w.])history(?!\w)")


class PromptError(ValueError):
    """A prompt template could not be compiled or rendered."""


def _prompt_library() -> Library:
    """The built-in tags and filters minus the forbidden tags."""
    library = Library()
    library.filters.update(defaultfilters.register.filters)
    library.tags.update(
        {name: tag for name, tag in defaulttags.register.tags.items() if name not in FORBIDDEN_TAGS}
    )
    return library


class _PromptEngine(Engine):
    """A template engine whose only builtins are the prompt library."""

    def get_template_builtins(self, builtins):
        """Ignore the default builtins (which include loader tags) and use the safe subset."""
        return [_prompt_library()]


# loaders=[] rather than None: None would install the filesystem loader.
_ENGINE = _PromptEngine(autoescape=False, loaders=[], libraries={}, string_if_invalid="", debug=False)


@lru_cache(maxsize=512)
def _compile(template: str) -> Template:
    """Compile a template once; compiled templates are reusable across renders and threads."""
    return _ENGINE.from_string(template)


def check_template(template: str) -> str | None:
    """Return why `template` does not compile, or None when it does."""
    if not isinstance(template, str):
        return f"template must be a string, not {type(template).__name__}"
    try:
        for token in Lexer(template).tokenize():
            name = token.contents.split(maxsplit=1)[0] if token.contents.strip() else ""
            if token.token_type == TokenType.BLOCK and name in REFUSED_TAGS:
                return f"line {token.lineno}: the {{% {name} %}} tag is not allowed in prompt templates"
        _compile(template)
    except TemplateSyntaxError as exc:
        return str(exc)
    return None


def referenced_outputs(template: str) -> set[str]:
    """Keys X used as `outputs.X` inside `{{ }}` or `{% %}` of `template` (not in plain text)."""
    keys: set[str] = set()
    for token in Lexer(template).tokenize():
        if token.token_type in (TokenType.VAR, TokenType.BLOCK):
            keys.update(OUTPUT_REF_RE.findall(token.contents))
    return keys


def uses_history(template: str) -> bool:
    """Whether `template` uses `history` inside `{{ }}` or `{% %}` (so the run must load it)."""
    return any(
        token.token_type in (TokenType.VAR, TokenType.BLOCK) and HISTORY_REF_RE.search(token.contents)
        for token in Lexer(template).tokenize()
    )


def render_prompt(template: str, input: str, outputs: Mapping[str, str], history: str = "") -> str:
    """Render `template` with the user's `input`, upstream `outputs` and `history`, all literally."""
    try:
        compiled = _compile(template)
        context = {"input": input, "outputs": dict(outputs), "history": history}
        # autoescape lives on the Context for Template.render; the engine flag alone is not enough.
        return compiled.render(Context(context, autoescape=False))
    except PromptError:
        raise
    except Exception as exc:  # any template failure is the task's failure, not the server's
        raise PromptError(f"prompt template failed: {exc}") from exc
