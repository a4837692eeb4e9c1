"""The chat page in headless Chromium, real daphne and Redis: order, stop, XSS, errors, resume, login."""

import contextlib
import json
import os
import re

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from streams.pipelines.files import parse_pipelines
from streams.pipelines.prompts import render_prompt
from streams.providers.base import LLMRequest
from streams.providers.simulated import SimulatedProvider
from tests.support.live import ROOT, LiveServer, app_env, manage, prepare_database
from tests.support.openai_server import OpenAIServer, RequestRecord, Script

pytestmark = [pytest.mark.browser, pytest.mark.redis]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DEMO_FILE = ROOT / "streams" / "fixtures_demo.json"
SCREENSHOT = ROOT / "docs" / "screenshot.png"
TASKS = ["task_a", "task_b", "task_c", "task_d"]
# Generous bound for anything the server does; each paced run below lasts a few seconds.
WAIT_MS = 30_000
expect.set_options(timeout=10_000)

# Records, in the page, the first moment each section shows text and each finishes, with what
# the other sections showed at that moment: the order the user saw, not the order of frames.
TIMELINE_JS = """
() => {
  const events = [];
  const seen = new Set();
  const aLengths = new Set();
  const snapshot = () => Object.fromEntries([...document.querySelectorAll("#conversation .task")].map(
    (s) => [s.dataset.task, {state: s.dataset.state, badge: s.querySelector(".badge").textContent,
                             text: s.querySelector(".md").textContent,
                             bg: s.querySelector(".bg-text").textContent}]));
  const record = (name) => {
    if (!seen.has(name)) { seen.add(name); events.push({name, at: snapshot()}); }
  };
  const check = () => {
    for (const s of document.querySelectorAll("#conversation .task")) {
      const key = s.dataset.task;
      const text = s.querySelector(".md").textContent;
      if (text) record("text:" + key);
      if (s.dataset.state === "done") record("done:" + key);
      if (key === "task_a" && s.dataset.state === "live") aLengths.add(text.length);
      if (/\\d+ tokens? so far/.test(s.querySelector(".bg-text").textContent)) record("progress:" + key);
    }
  };
  new MutationObserver(check).observe(document.getElementById("conversation"),
    {subtree: true, childList: true, characterData: true, attributes: true});
  window.__timeline = () => ({events, aLengths: [...aLengths]});
}
"""


def shown(text: str) -> str:
    """Text as a reader sees it: each run of whitespace as one space."""
    return " ".join(text.split())


def rendered(markdown: str) -> str:
    """What the page shows of the simulated provider's Markdown (headings, lists, bold, fences)."""
    return shown(re.sub(r"^(#+ |- |```\w*$)", "", markdown, flags=re.M).replace("**", ""))


def demo_texts(user_input: str, tokens: int) -> dict[str, str]:
    """What the page shows for each demo task on this input (D sees A's output), as shown()."""
    (spec,) = parse_pipelines(json.loads(DEMO_FILE.read_text(encoding="utf-8")))
    provider = SimulatedProvider(tokens=tokens)
    outputs: dict[str, str] = {}
    for task in spec.tasks:
        upstream = {k: outputs[k] for k in task.depends_on}
        request = LLMRequest(
            model=task.model,
            prompt=render_prompt(task.prompt, user_input, upstream),
            system=render_prompt(task.system, user_input, upstream) if task.system else "",
        )
        outputs[task.key] = "".join(provider.text_for(request))
    return {key: rendered(text) for key, text in outputs.items()}


def section(page: Page, key: str, turn: int = 0):
    """The section of a task in the given turn."""
    return page.locator("#conversation > .turn").nth(turn).locator(f'.task[data-task="{key}"]')


def section_text(page: Page, key: str, turn: int = 0) -> str:
    """The rendered text of a task's section."""
    return section(page, key, turn).locator(".md").text_content().strip()


def send(page: Page, text: str) -> None:
    """Type a message into the composer and press Enter, keyboard only."""
    prompt = page.locator("#prompt")
    expect(prompt).to_be_focused()
    lines = text.split("\n")
    for i, line in enumerate(lines):
        page.keyboard.type(line)
        if i < len(lines) - 1:
            page.keyboard.press("Shift+Enter")
    page.keyboard.press("Enter")


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium (Debian's) for the module."""
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing; scripts/test installs it")
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture
def page(browser):
    """A fresh browser context and page; script errors and dialogs fail the test."""
    context = browser.new_context(
        viewport={"width": 1100, "height": 900}, reduced_motion="reduce", color_scheme="light"
    )
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.dialogs = []
    page.errors = []
    page.on("dialog", lambda d: (page.dialogs.append(d.message), d.dismiss()))
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    yield page
    context.close()
    assert page.errors == [], f"script errors on the page: {page.errors}"


@pytest.fixture
def serve(tmp_path, redis_url):
    """Start one daphne over a fresh database: `serve(pipelines=None, **env)` returns the LiveServer."""
    with contextlib.ExitStack() as stack:

        def start(pipelines: dict | None = None, **env: str) -> LiveServer:
            database_url = prepare_database(tmp_path, redis_url, pipelines)
            server = LiveServer(app_env(database_url, redis_url, **env), log_path=tmp_path / "daphne.log")
            return stack.enter_context(server)

        yield start


def open_chat(page: Page, server: LiveServer) -> None:
    """Load the chat page and wait for its socket."""
    page.goto(server.url + "/")
    expect(page.locator("#conn")).to_have_attribute("data-state", "open")


def start_paced_run(page: Page, serve, message: str, *, words: int, **env: str):
    """Serve the demo with `env`, send `message`, wait for `words` words of the answer: (server, answer)."""
    server = serve(**{"SIMULATED_TTFT_S": "0.1", **env})  # the first token soon, unless `env` says
    open_chat(page, server)
    send(page, message)
    answer = section(page, "task_a").locator(".md")
    expect(answer).to_have_text(re.compile(rf"(\S+ ){{{words - 1}}}\S+"))
    return server, answer


def test_answer_streams_live_then_sections_in_order(page, serve, tmp_path):
    """A message shows A token by token while B, C, D run in the background, then B, C, D in order."""
    tokens = 40
    server = serve(SIMULATED_TOKENS_PER_S="20", SIMULATED_TOKENS=str(tokens), SIMULATED_TTFT_S="0.1")
    open_chat(page, server)
    expect(page.locator("#pipeline")).to_have_value("demo")
    page.evaluate(TIMELINE_JS)
    message = "How does a pipeline keep its answers in order?\nPlease be brief."
    send(page, message)

    expect(page.locator(".user-text")).to_have_text(message)  # Shift+Enter kept the newline
    expect(page.locator("#stop")).to_be_visible()
    expect(page.locator(".turn-status")).to_have_text(re.compile(r"^Finished in"), timeout=WAIT_MS)

    expected = demo_texts(message, tokens)
    assert {key: shown(section_text(page, key)) for key in TASKS} == expected
    titles = page.locator(".task-title").all_text_contents()
    assert titles == ["Answer", "Key points", "Tone and intent", "Follow-up questions"]

    timeline = page.evaluate("() => window.__timeline()")
    order = [e["name"] for e in timeline["events"] if not e["name"].startswith("progress:")]
    assert order == [f"{kind}:{key}" for key in TASKS for kind in ("text", "done")]
    # When A's first words were on screen, B was held back: no text, "running in the background".
    at_a = next(e["at"] for e in timeline["events"] if e["name"] == "text:task_a")
    assert at_a["task_a"]["state"] == "live"
    assert at_a["task_a"]["text"] and len(at_a["task_a"]["text"]) < len(expected["task_a"])
    for key in TASKS[1:]:
        assert at_a[key]["text"] == "" and at_a[key]["badge"] == "Running in the background"
    # A grew token by token on screen, and the held-back sections showed run.progress counts.
    assert len(timeline["aLengths"]) >= 5
    assert any(e["name"].startswith("progress:") for e in timeline["events"])
    # Completion is announced politely, one message per section, never per token.
    announced = page.locator("#announcer p").all_text_contents()
    assert [a.split(":")[0] for a in announced] == titles
    expect(page.locator("#send")).to_be_visible()
    expect(page.locator("#prompt")).to_be_focused()

    # The whole exchange renders into a picture (the README's is test_browser_chat.py's).
    target = tmp_path / "screenshot.png"
    page.set_viewport_size({"width": 1200, "height": 1000})
    page.screenshot(path=str(target))
    assert target.stat().st_size > 10_000


def test_stop_cancels_the_run_and_says_so(page, serve):
    """Stop sends run.cancel; the server ends the run and the page says it was stopped."""
    _, answer = start_paced_run(
        page, serve, "Tell me a very long story.", words=2, SIMULATED_TOKENS_PER_S="5", SIMULATED_TOKENS="200"
    )

    # Keyboard only: Tab from the message box reaches Stop (Send is hidden while a run is on).
    page.keyboard.press("Tab")
    expect(page.get_by_role("button", name="Stop")).to_be_focused()
    page.keyboard.press("Enter")

    expect(page.locator(".turn-status")).to_have_text("Stopped. The run was cancelled.")
    for key in TASKS:
        expect(section(page, key)).to_have_attribute("data-state", "stopped")
        expect(section(page, key).locator(".badge")).to_have_text("Stopped")
    stopped_text = answer.text_content()
    page.wait_for_timeout(1000)  # tokens still on their way would show up within this
    assert answer.text_content() == stopped_text
    assert len(stopped_text.split()) < 200
    expect(page.locator("#announcer")).to_contain_text("Stopped.")
    expect(page.locator("#send")).to_be_visible()
    expect(page.locator("#stop")).to_be_hidden()
    expect(page.locator("#prompt")).to_be_focused()  # focus did not fall to <body> with the button


XSS_PAYLOAD = (
    "Hello <script>window.__xss = 'script'; alert('script')</script> there. "
    "<img src=x onerror=\"window.__xss = 'img'; alert('img')\"> "
    "[click me](javascript:window.__xss='link';alert('link')) "
    "<a href=\"javascript:alert('raw')\">raw link</a> "
    "<svg onload=\"alert('svg')\"></svg> "
    "![tracker](http://127.0.0.1:9/pixel.png) "
    "[fine](https://example.org/) **bold**"
)


def untrusted_pipeline(tasks: list[tuple[str, str]]) -> dict:
    """A pipeline file whose tasks call the `openai` provider; the system prompt names the script."""
    return {
        "pipelines": [
            {
                "slug": "untrusted",
                "name": "Untrusted",
                "tasks": [
                    {"key": key, "title": title, "provider": "openai", "model": "test-model", "system": key}
                    for key, title in tasks
                ],
            }
        ]
    }


def system_of(record: RequestRecord) -> str:
    """The system message of a chat.completions request."""
    for message in (record.body or {}).get("messages", []):
        if message.get("role") == "system":
            return message.get("content") or ""
    return ""


def test_model_output_with_scripts_and_handlers_is_inert(page, serve):
    """Script tags, event handlers and javascript: links from the model show as text and do nothing."""
    scripts = {
        "task_a": Script(text=XSS_PAYLOAD, tokens_per_s=200),
        "task_b": Script(text="- " + XSS_PAYLOAD),
    }
    with OpenAIServer(lambda record: scripts[system_of(record)]) as llm:
        server = serve(
            untrusted_pipeline([("task_a", "Answer"), ("task_b", "List")]),
            OPENAI_BASE_URL=llm.base_url,
            OPENAI_API_KEY="test",
        )
        open_chat(page, server)
        page.select_option("#pipeline", "untrusted")
        page.locator("#prompt").focus()
        send(page, "<b>not bold</b> <img src=x onerror=alert('input')>")
        expect(page.locator(".turn-status")).to_have_text(re.compile(r"^Finished in"))

    assert page.locator(".user-text").text_content() == "<b>not bold</b> <img src=x onerror=alert('input')>"
    for key in ("task_a", "task_b"):
        body = section(page, key).locator(".md")
        text = body.inner_text()
        for visible in ("<script>", "onerror=", "[click me](javascript:", "raw link", "!tracker", "bold"):
            assert visible in text
        assert body.locator("script, img, svg, iframe, object, embed, style").count() == 0
        assert body.locator("strong").all_text_contents() == ["bold"]  # Markdown still renders
        hrefs = body.locator("a").evaluate_all("(links) => links.map((a) => a.getAttribute('href'))")
        # Image syntax is off (no fetch of a URL the model picked): it degrades to a plain link.
        assert hrefs == ["http://127.0.0.1:9/pixel.png", "https://example.org/"]
        rels = body.locator("a").evaluate_all("(links) => links.map((a) => a.rel + ' ' + a.target)")
        assert rels == ["noopener noreferrer nofollow _blank"] * 2
    handlers = page.evaluate(
        """() => [...document.querySelectorAll('#conversation *')].flatMap(
             (el) => [...el.attributes].filter((a) => /^on/i.test(a.name)).map((a) => a.name))"""
    )
    assert handlers == []
    page.get_by_text("[click me](javascript:", exact=False).first.click()
    page.wait_for_timeout(300)  # a handler or navigation would have fired by now
    assert page.evaluate("() => window.__xss") is None
    assert page.dialogs == []
    # No navigation: still the chat page, whose URL names only the conversation.
    assert re.fullmatch(re.escape(server.url) + r"/\?c=\w+", page.url), page.url


def test_a_failing_task_shows_its_error_while_the_others_go_on(page, serve):
    """A provider error mid-stream fails that task's section only; the run finishes."""
    scripts = {
        "task_a": Script(text="The answer is **forty-two**."),
        "task_b": Script(text="one two three four five", error_after=2, error_message="model overloaded"),
        "task_c": Script(text="Tone: calm."),
    }
    with OpenAIServer(lambda record: scripts[system_of(record)]) as llm:
        server = serve(
            untrusted_pipeline([("task_a", "Answer"), ("task_b", "Flaky"), ("task_c", "Tone")]),
            OPENAI_BASE_URL=llm.base_url,
            OPENAI_API_KEY="test",
            LLM_MAX_RETRIES="0",
        )
        open_chat(page, server)
        page.select_option("#pipeline", "untrusted")
        page.locator("#prompt").focus()
        send(page, "question")
        status = page.locator(".turn-status")
        expect(status).to_have_text(re.compile(r"^Finished in .*1 section failed"))
        # The conversation keeps its history: a second message adds a turn below the first.
        send(page, "second question")
        expect(status).to_have_count(2)
        expect(status.nth(1)).to_have_text(re.compile(r"^Finished in .*1 section failed"))

    assert page.locator(".user-text").all_text_contents() == ["question", "second question"]
    for turn in (0, 1):
        assert section_text(page, "task_a", turn) == "The answer is forty-two."
        assert section_text(page, "task_c", turn) == "Tone: calm."
        expect(section(page, "task_b", turn)).to_have_attribute("data-state", "failed")
        expect(section(page, "task_b", turn).locator(".task-error")).to_contain_text("model overloaded")
        expect(section(page, "task_a", turn)).to_have_attribute("data-state", "done")
        expect(section(page, "task_c", turn)).to_have_attribute("data-state", "done")


RESUMABLE_TOKENS = 60
RESUMABLE_MESSAGE = "Explain resumable streams."


def start_resumable_run(page: Page, serve):
    """A paced demo run (with a resume grace period) whose first answer is a few words in."""
    return start_paced_run(
        page,
        serve,
        RESUMABLE_MESSAGE,
        words=5,
        SIMULATED_TOKENS_PER_S="15",
        SIMULATED_TOKENS=str(RESUMABLE_TOKENS),
        STREAMS_RESUME_GRACE_S="30",
    )


def test_dropped_connection_resumes_with_every_token_exactly_once(page, serve):
    """The socket closes mid-run; the page reconnects, resumes after its last seq and dedupes a replay."""
    _, answer = start_resumable_run(page, serve)
    tokens, message = RESUMABLE_TOKENS, RESUMABLE_MESSAGE

    seen_before = len(answer.text_content())
    # Close the socket for real (the server sees the close) and stay offline for 1.5 s while the
    # server goes on producing.
    page.evaluate("() => window.streamsChat.drop(1500)")
    expect(page.locator("#conn")).to_have_attribute("data-state", "down")
    # Functions, not strings: the page's CSP forbids eval, which string predicates need.
    page.wait_for_function("() => window.streamsChat.connected && window.streamsChat.opens === 2")
    page.wait_for_function(
        "(before) => document.querySelector('.task .md').textContent.length > before", arg=seen_before
    )
    # A second, overlapping replay from seq 0 on the live socket: every frame arrives twice.
    assert page.evaluate("() => window.streamsChat.lastSeq") > 0
    page.evaluate("() => window.streamsChat.resume(0)")

    expect(page.locator(".turn-status")).to_have_text(re.compile(r"^Finished in"), timeout=WAIT_MS)
    assert {key: shown(section_text(page, key)) for key in TASKS} == demo_texts(message, tokens)
    assert page.evaluate("() => window.streamsChat.opens") == 2
    expect(page.locator("#announcer")).to_contain_text("Reconnected.")


def test_without_a_grace_period_a_dropped_connection_cancels_the_run(page, serve):
    """The default STREAMS_RESUME_GRACE_S=0: the resume finds the run cancelled and the page says why."""
    start_paced_run(
        page, serve, RESUMABLE_MESSAGE, words=2, SIMULATED_TOKENS_PER_S="10", SIMULATED_TOKENS="100"
    )

    page.evaluate("() => window.streamsChat.drop(500)")

    expect(page.locator(".turn-status")).to_have_text(
        "The server cancelled this run when the connection dropped.", timeout=WAIT_MS
    )
    assert page.evaluate("() => window.streamsChat.opens") == 2
    for key in TASKS:
        expect(section(page, key)).to_have_attribute("data-state", "stopped")


def test_without_anonymous_use_the_page_sends_visitors_to_login(page, serve):
    """STREAMS_ALLOW_ANONYMOUS=0: the chat page redirects to login; after login the socket opens."""
    server = serve(STREAMS_ALLOW_ANONYMOUS="0")
    manage(
        server.env,
        "shell",
        "-c",
        "from django.contrib.auth.models import User; User.objects.create_user('ada', password='pw-ada-42')",
    )
    page.goto(server.url + "/")
    expect(page).to_have_url(f"{server.url}/accounts/login/?next=/")
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()

    page.get_by_label("Username").fill("ada")
    page.get_by_label("Password").fill("wrong")
    page.keyboard.press("Enter")
    expect(page.get_by_role("alert")).to_contain_text("did not match")

    page.get_by_label("Password").fill("pw-ada-42")
    page.keyboard.press("Enter")
    expect(page).to_have_url(f"{server.url}/")
    expect(page.locator("#conn")).to_have_attribute("data-state", "open")
    expect(page.locator(".who-am-i")).to_have_text("ada")
