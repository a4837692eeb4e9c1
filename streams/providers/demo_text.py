"""The simulated provider's text: deterministic, readable Markdown built from a prompt.

A heading, a short paragraph, a list and a fenced Python block on the prompt's own words come
first, so that even a short answer shows what the chat page renders; more sections follow
as long as tokens are asked for. Tokens are whitespace-led words, as a model's are; the last
one carries the rest of the sentence, list item or code block it falls in, so an answer of
any length is well-formed (never a dangling fence) and still exactly that many tokens.
"""

import hashlib
import re
from collections.abc import Iterator

__all__ = ["WORDS", "markdown_tokens"]

# Words used when the prompt has too few of its own (and the shared vocabulary of test texts).
WORDS = [
    "stream",
    "order",
    "token",
    "answer",
    "model",
    "latency",
    "pipeline",
    "context",
    "signal",
    "summary",
    "detail",
    "result",
    "insight",
    "measure",
    "flow",
    "event",
    "buffer",
    "render",
    "reason",
    "clear",
    "quick",
    "steady",
]

# Words too common to be a topic, and Python's (prompts may quote an earlier answer).
COMMON = """
    about above after again against all also and any are because been before being below
    between both but can could did does doing down during each few for from further had has
    have having her here hers him his how into its itself just like make many more most much
    must not now off once only other our ours out over own please same she should some such
    than that the their theirs them then there these they this those through too under until
    very was were what when where which while who whom why will with would you your yours
    tell give show explain want need know think something things thing way ways use using
    following message messages user asked assistant answered suggest questions question might
    next three two one short points point key list describe tone intent likely sentences
    bullet follow ask brief useful helpful depends
    def return import class none true false self print lambda yield
"""
TITLES = [
    "A short guide to {a} and {b}",
    "How {a} works with {b}",
    "{A}, step by step",
    "Notes on {a} and {b}",
]
SENTENCES = [
    "In short, {a} depends on how you handle {b}.",
    "Keep {a} small and let {b} do the rest.",
    "Most of the work happens where {b} and {c} meet.",
    "Start with {a}, then look at {c}.",
    "A clear {a} makes {b} easy to follow.",
    "The details of {c} matter less than you think.",
]
POINTS = [
    "keep it small",
    "measure it first",
    "name it after what it does",
    "test it with real data",
    "write down why",
    "make it easy to undo",
]
CODE = [
    "def {a}_{b}(items):\n    return [item for item in items if item]",
    "def count_{a}(items):\n    total = 0\n    for item in items:\n"
    "        total += len(item)\n    return total",
    "def sort_{b}(items):\n    return sorted(items, key=len)",
    'def describe_{a}(name):\n    return f"{{name}}: {b} and {c}"',
]
TOKEN_RE = re.compile(r"\s*\S+")
WORD_RE = re.compile(r"[A-Za-z]{3,20}")
FENCE = "```"
# The answers' own words too: a prompt that quotes an earlier answer is not about "matter".
STOPWORDS = frozenset(
    w.lower() for w in WORD_RE.findall(" ".join([COMMON, *TITLES, *SENTENCES, *POINTS, *CODE]))
)


def topic_words(prompt: str, digest: bytes, count: int = 3) -> list[str]:
    """The prompt's longest distinct uncommon words (lower-case, first seen first among equals),
    topped up from WORDS: long words are the likeliest to say what it is about."""
    seen: dict[str, int] = {}
    for word in WORD_RE.findall(prompt):
        word = word.lower()
        if word not in STOPWORDS:
            seen.setdefault(word, len(seen))
    out = sorted(seen, key=lambda w: (-len(w), seen[w]))[:count]
    return out + _more_words(digest, out, count - len(out))


def _more_words(digest: bytes, taken: list[str], count: int, start: int = 0) -> list[str]:
    """`count` words of WORDS not in `taken`, chosen by the digest."""
    out: list[str] = []
    for i in range(start, start + 2 * len(WORDS)):
        if len(out) >= count:
            break
        word = WORDS[(digest[i % len(digest)] + i) % len(WORDS)]
        if word not in taken and word not in out:
            out.append(word)
    return out


def _blocks(prompt: str, seed: str) -> Iterator[tuple[str, str]]:
    """(kind, Markdown) blocks without end: "text" (a heading and a paragraph), "list", "code"."""
    digest = hashlib.sha256(f"{seed}\0{prompt}".encode()).digest()
    a, b, c = topic_words(prompt, digest)
    section = 0
    while True:

        def pick(options: list[str], salt: int, section: int = section) -> str:
            return options[(digest[(section * 5 + salt) % len(digest)] + section) % len(options)]

        words = {"a": a, "b": b, "c": c, "A": a.capitalize()}
        title = ("## " if section == 0 else "### ") + pick(TITLES, 0).format(**words)
        first = SENTENCES.index(pick(SENTENCES, 1))
        paragraph = " ".join(SENTENCES[(first + i) % len(SENTENCES)] for i in range(2))
        yield "text", f"{title}\n\n{paragraph.format(**words)}"
        start = digest[(section * 5 + 2) % len(digest)]
        items = [(w, POINTS[(start + i) % len(POINTS)]) for i, w in enumerate((a, b, c))]
        yield "list", "\n".join(f"- **{w.capitalize()}**: {point}" for w, point in items)
        yield "code", f"{FENCE}python\n{pick(CODE, 3).format(**words)}\n{FENCE}"
        # The next section turns to the next words, so a long answer does not repeat itself.
        section += 1
        a, b, c = b, c, _more_words(digest, [b, c], 1, start=section)[0]


def _unit_end(block: list[str], kind: str, index: int) -> int:
    """Where the unit (sentence, list item, code block) that holds block[index] ends (exclusive)."""
    for j in range(index, len(block) - 1):
        if kind == "text" and block[j][-1] in ".!?":
            return j + 1
        if kind == "list" and block[j + 1].startswith("\n"):
            return j + 1
    return len(block)


def markdown_tokens(prompt: str, seed: str, count: int) -> list[str]:
    """Exactly `count` tokens of Markdown about `prompt`; `seed` varies the wording (model, system).

    The last token carries the rest of the sentence, list item or code block that the count
    cuts into, so the answer ends well-formed.
    """
    tokens: list[str] = []
    if count <= 0:
        return tokens
    for index, (kind, text) in enumerate(_blocks(prompt, seed)):
        block = TOKEN_RE.findall(("\n\n" if index else "") + text)
        room = count - len(tokens)
        if len(block) >= room:
            last = room - 1
            return [*tokens, *block[:last], "".join(block[last : _unit_end(block, kind, last)])]
        tokens += block
    raise AssertionError("the blocks never end")  # pragma: no cover
