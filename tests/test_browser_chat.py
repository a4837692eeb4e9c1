"""The chat page as a chat, in headless Chromium against real daphne and Redis: conversations,
the list, restore on reload (ended and in-flight runs), stops and cuts that survive a reload,
CJK text, and no template syntax on screen. Fixtures and helpers are tests/test_browser.py's."""

import os
import re
import time

import pytest
from playwright.sync_api import Page, expect

import tests.test_browser as base
from tests.support.openai_server import OpenAIServer, Script
from tests.test_browser import (
    SCREENSHOT,
    TASKS,
    WAIT_MS,
    demo_texts,
    open_chat,
    section,
    section_text,
    send,
    shown,
)

pytestmark = [pytest.mark.browser, pytest.mark.redis]

# The page tests' fixtures (assigned, not imported, so that test arguments do not shadow an import).
browser, page, serve = base.browser, base.page, base.serve

# One task on the `openai` provider whose prompt shows the conversation so far; with an echo
# upstream its answer is exactly that prompt, so the page shows what the model was sent.
HISTORY_PIPELINE = {
    "pipelines": [
        {
            "slug": "history",
            "name": "History echo",
            "tasks": [
                {
                    "key": "answer",
                    "title": "Answer",
                    "provider": "openai",
                    "model": "test-model",
                    "prompt": "History: {{ history }} | Question: {{ input }}",
                }
            ],
        }
    ]
}
TURN = "#conversation > .turn"
FINISHED = re.compile(r"^Finished")
CJK_FAMILIES = ("PingFang SC", "Microsoft YaHei", "Noto Sans CJK SC", "Source Han Sans SC")


def history_server(**script) -> OpenAIServer:
    """An upstream that streams every prompt back."""
    return OpenAIServer(Script(echo=True, **script))


def serve_history(serve, llm: OpenAIServer, **env: str):
    """The app with the history pipeline selected by default (it is the only one but demo)."""
    return serve(HISTORY_PIPELINE, OPENAI_BASE_URL=llm.base_url, OPENAI_API_KEY="test", **env)


def ask(page: Page, text: str, turns: int) -> None:
    """Send a message from the focused composer and wait until the turn (the `turns`-th) ends."""
    page.locator("#prompt").focus()
    send(page, text)
    status = page.locator(f"{TURN} .turn-status")
    expect(status).to_have_count(turns)
    expect(status.nth(turns - 1)).to_have_text(FINISHED, timeout=WAIT_MS)


def conversation_id(page: Page) -> str:
    """The conversation the page shows, from its URL (?c=<id>)."""
    match = re.search(r"[?&]c=([^&#]+)", page.url)
    assert match, f"no conversation in {page.url}"
    return match.group(1)


def recorded(page: Page, server, cid: str, status: str, turns: int) -> dict:
    """The conversation from the API once its last turn has `status` (the writer is off the hot path)."""
    deadline = time.monotonic() + 10
    while True:
        body = page.request.get(f"{server.url}/api/conversations/{cid}").json()
        if len(body["turns"]) == turns and body["turns"][-1]["status"] == status:
            return body
        assert time.monotonic() < deadline, f"the records did not reach {status}: {body}"
        time.sleep(0.1)


def list_titles(page: Page) -> list[str]:
    """The conversation list's titles, top first."""
    return page.locator("#conversations .conv-title").all_text_contents()


def visible_text_without_template_syntax(page: Page) -> str:
    """The page's visible text, asserted free of Django template syntax."""
    text = page.evaluate("() => document.body.innerText")
    for token in ("{#", "#}", "{%", "%}", "{{", "}}"):
        assert token not in text, f"template syntax {token!r} is visible: {text[:300]!r}"
    return text


def test_a_second_turn_sees_the_first_and_a_reload_restores_both(page, serve):
    """Two turns in one conversation: the second answer shows the first turn was its history."""
    with history_server() as llm:
        server = serve_history(serve, llm)
        open_chat(page, server)
        page.select_option("#pipeline", "history")
        expect(page.locator("#conversations-note")).to_have_text("No chats yet.")
        ask(page, "What is 2+2?", 1)
        cid = conversation_id(page)  # the first run.accepted named the new conversation
        assert page.evaluate("() => window.streamsChat.conversation") == cid
        first = section_text(page, "answer", 0)
        assert first == "History:  | Question: What is 2+2?"  # no history yet
        ask(page, "And 3+3?", 2)
        second = section_text(page, "answer", 1)
        assert conversation_id(page) == cid
        assert [r.body.get("messages") for r in llm.requests][1] == [
            {
                "role": "user",
                "content": f"History: User: What is 2+2?\nAssistant: {first} | Question: And 3+3?",
            }
        ]
        assert second.startswith("History: User: What is 2+2?") and second.endswith("Question: And 3+3?")
        expect(page.locator("#conversations .conv-link")).to_have_count(1)
        expect(page.locator('#conversations [aria-current="page"] .conv-title')).to_have_text("What is 2+2?")

        recorded(page, server, cid, "completed", 2)
        page.reload()
        expect(page.locator(TURN)).to_have_count(2)
        assert page.locator(".user-text").all_text_contents() == ["What is 2+2?", "And 3+3?"]
        assert [section_text(page, "answer", t) for t in (0, 1)] == [first, second]
        for turn in (0, 1):
            expect(section(page, "answer", turn)).to_have_attribute("data-state", "done")
            expect(page.locator(f"{TURN} .turn-status").nth(turn)).to_have_text("Finished.")
        expect(page.locator("#empty")).to_be_hidden()
        expect(page.locator("#pipeline")).to_have_value("history")  # the conversation's pipeline

        # The restored conversation goes on: a third turn has both earlier ones as history.
        ask(page, "Thanks!", 3)
        third = section_text(page, "answer", 2)
        assert "User: What is 2+2?" in third and "User: And 3+3?" in third
        assert conversation_id(page) == cid
        visible_text_without_template_syntax(page)


def test_new_chat_starts_empty_and_the_list_holds_both(page, serve):
    """ "New chat" empties the page and drops ?c; its first answer makes a second list entry."""
    with history_server() as llm:
        server = serve_history(serve, llm)
        open_chat(page, server)
        page.select_option("#pipeline", "history")
        ask(page, "first chat", 1)
        first_id = conversation_id(page)

        page.get_by_role("button", name="New chat").click()
        expect(page.locator(TURN)).to_have_count(0)
        expect(page.locator("#empty")).to_be_visible()
        expect(page.locator("#prompt")).to_be_focused()
        assert "c=" not in page.url
        ask(page, "second chat", 1)
        second_id = conversation_id(page)
        assert second_id != first_id
        # The new chat did not inherit the first one's history.
        assert section_text(page, "answer") == "History:  | Question: second chat"
        expect(page.locator("#conversations .conv-link")).to_have_count(2)
        expect(page.locator("#conversations .conv-title")).to_have_text(["second chat", "first chat"])
        expect(page.locator('#conversations [aria-current="page"]')).to_have_attribute("data-id", second_id)

        # Selecting the other entry loads it; Back returns to the second chat.
        page.locator("#conversations .conv-link", has_text="first chat").click()
        expect(page.locator(".user-text")).to_have_text(["first chat"])
        assert conversation_id(page) == first_id
        expect(page.locator('#conversations [aria-current="page"]')).to_have_attribute("data-id", first_id)
        page.go_back()
        expect(page.locator(".user-text")).to_have_text(["second chat"])
        assert conversation_id(page) == second_id

        # Someone else's (or a made-up) id is not shown: the page says so and offers a new chat.
        page.goto(f"{server.url}/?c=not-a-conversation")
        expect(page.locator("#notice")).to_contain_text("does not exist")
        expect(page.locator(TURN)).to_have_count(0)
        assert "c=" not in page.url


def test_a_stopped_answer_stays_marked_as_stopped_after_a_reload(page, serve):
    """Esc stops the run; after a reload the partial answer is there, marked as stopped."""
    server, answer = base.start_paced_run(
        page, serve, "Tell me a very long story.", words=4, SIMULATED_TOKENS_PER_S="8", SIMULATED_TOKENS="200"
    )
    page.keyboard.press("Escape")
    expect(page.locator(".turn-status")).to_have_text("Stopped. The run was cancelled.")
    stopped_text = answer.text_content()
    cid = conversation_id(page)

    body = recorded(page, server, cid, "cancelled", 1)
    assert [t["status"] for t in body["turns"][0]["tasks"]] == ["cancelled"] * 4
    page.reload()
    expect(page.locator(TURN)).to_have_count(1)
    expect(page.locator(".turn-status")).to_have_text("Stopped. The run was cancelled.")
    for key in TASKS:
        expect(section(page, key)).to_have_attribute("data-state", "stopped")
        expect(section(page, key).locator(".badge")).to_have_text("Stopped")
    assert answer.text_content() == stopped_text  # exactly what the page had when it stopped
    expect(page.locator("#stop")).to_be_hidden()


def test_a_run_in_flight_at_reload_is_resumed_and_completes(page, serve):
    """Reload mid-run (resume grace period on): the chat loads, the run resumes, every token arrives once."""
    base.start_resumable_run(page, serve)
    tokens, message = base.RESUMABLE_TOKENS, base.RESUMABLE_MESSAGE
    cid = conversation_id(page)

    page.reload()
    expect(page.locator("#conn")).to_have_attribute("data-state", "open")
    expect(page.locator(TURN)).to_have_count(1)
    expect(page.locator("#stop")).to_be_visible()  # the resumed run can be stopped
    expect(page.locator(".turn-status")).to_have_text("Finished.", timeout=WAIT_MS)
    assert {key: shown(section_text(page, key)) for key in TASKS} == demo_texts(message, tokens)
    assert page.locator(".user-text").all_text_contents() == [message]
    assert conversation_id(page) == cid
    expect(page.locator("#send")).to_be_visible()


def test_a_length_cut_and_an_incomplete_answer_are_shown_live_and_after_a_reload(page, serve):
    """finish_reason "length" is marked "cut off"; a stream without a finish_reason fails as incomplete."""
    scripts = {
        "task_a": Script(text="A long answer that the model had to", finish_reason="length"),
        "task_b": Script(text="Half of a summary", finish_reason=None),
    }
    with OpenAIServer(lambda record: scripts[base.system_of(record)]) as llm:
        server = serve(
            base.untrusted_pipeline([("task_a", "Answer"), ("task_b", "Summary")]),
            OPENAI_BASE_URL=llm.base_url,
            OPENAI_API_KEY="test",
            LLM_MAX_RETRIES="0",
        )
        open_chat(page, server)
        page.select_option("#pipeline", "untrusted")
        page.locator("#prompt").focus()
        send(page, "question")
        expect(page.locator(".turn-status")).to_have_text(re.compile(r"^Finished in .*1 section failed"))

        def check() -> None:
            cut = section(page, "task_a")
            expect(cut).to_have_attribute("data-finish", "length")
            expect(cut.locator(".badge")).to_have_text("Cut off")
            expect(cut.locator(".task-note")).to_have_text("Cut off: length limit")
            assert section_text(page, "task_a") == "A long answer that the model had to"
            failed = section(page, "task_b")
            expect(failed).to_have_attribute("data-state", "failed")
            expect(failed.locator(".task-error")).to_contain_text("(incomplete)")
            expect(failed.locator(".task-error")).to_contain_text("without a finish_reason")
            assert section_text(page, "task_b") == "Half of a summary"  # what arrived stays

        check()
        expect(page.locator("#announcer")).to_contain_text("Answer (cut off: length limit)")
        recorded(page, server, conversation_id(page), "failed", 1)
        page.reload()
        expect(page.locator(TURN)).to_have_count(1)
        check()
        expect(page.locator(".turn-status")).to_have_text("Finished; 1 section failed.")


def test_chinese_text_round_trips_with_a_cjk_font_and_no_template_syntax_shows(page, serve):
    """CJK input renders and survives a reload; body and input fonts name CJK families."""
    message = "你好，世界！请用中文回答：流式输出如何保持顺序？"  # noqa: RUF001 (Chinese punctuation)
    with history_server() as llm:
        server = serve_history(serve, llm)
        open_chat(page, server)
        visible_text_without_template_syntax(page)
        for selector in ("body", "#prompt"):
            family = page.locator(selector).evaluate("(el) => getComputedStyle(el).fontFamily")
            assert all(f in family for f in CJK_FAMILIES), f"{selector}: {family}"
        page.select_option("#pipeline", "history")
        ask(page, message, 1)
        expect(page.locator(".user-text")).to_have_text(message)
        assert section_text(page, "answer") == f"History:  | Question: {message}"
        expect(page.locator("#conversations .conv-title")).to_have_text([message])
        recorded(page, server, conversation_id(page), "completed", 1)
        page.reload()
        expect(page.locator(".user-text")).to_have_text(message)
        assert section_text(page, "answer") == f"History:  | Question: {message}"
        text = visible_text_without_template_syntax(page)
        assert message in text
    page.goto(server.url + "/accounts/login/")
    visible_text_without_template_syntax(page)


def test_on_a_narrow_screen_the_list_is_a_drawer_that_the_keyboard_can_use(page, serve):
    """Below 900 px the list is hidden behind "Chats"; Esc closes it and focus goes back."""
    with history_server() as llm:
        server = serve_history(serve, llm)
        page.set_viewport_size({"width": 420, "height": 800})
        open_chat(page, server)
        page.select_option("#pipeline", "history")
        ask(page, "narrow one", 1)
        toggle = page.get_by_role("button", name="Chats")
        expect(toggle).to_have_attribute("aria-expanded", "false")
        expect(page.locator("#sidebar")).to_be_hidden()

        toggle.click()
        expect(page.locator("#sidebar")).to_be_visible()
        expect(toggle).to_have_attribute("aria-expanded", "true")
        expect(page.locator('#conversations [aria-current="page"]')).to_be_focused()
        page.keyboard.press("Escape")
        expect(page.locator("#sidebar")).to_be_hidden()
        expect(toggle).to_be_focused()

        toggle.click()
        page.get_by_role("button", name="New chat").click()
        expect(page.locator("#sidebar")).to_be_hidden()
        expect(page.locator(TURN)).to_have_count(0)
        toggle.click()
        page.keyboard.press("Tab")  # from New chat to the one conversation
        page.keyboard.press("Enter")
        expect(page.locator("#sidebar")).to_be_hidden()
        expect(page.locator(".user-text")).to_have_text(["narrow one"])
        expect(page.locator("#prompt")).to_be_focused()


# The README's picture: a two-turn conversation of a two-section pipeline, two older chats.
PICTURE_ANSWERS = {
    "Why is the sky blue?": (
        "Sunlight scatters off air molecules, and **blue light scatters most** (Rayleigh scattering).",
        "- Shorter wavelengths scatter more\n- Sunsets are red: the light crosses more air",
    ),
    "Summarise the release notes in three bullets": (
        "Conversations, run records and a local model.",
        "- Chats survive a reload\n- Every run is recorded\n- SmolLM2 runs without a key",
    ),
    "How does a pipeline keep its answers in order?": (
        "Every task starts **at once**. The first one streams to you live, token by token; the "
        "others run in the background and are held back, then shown in pipeline order as soon "
        "as the sections before them are done.",
        "- Nothing waits for anything\n- Delivery order is the pipeline's order\n"
        "- Stop cancels every upstream call",
    ),
    "And if I reload the page?": (
        "Nothing is lost. The chat is in the URL (`?c=...`): the page loads it from "
        "`/api/conversations/<id>`, shows every turn as it was, and **resumes** a run still in "
        "flight with `run.resume`.",
        "- A stopped answer stays marked as stopped\n- A cut at the length limit stays marked\n"
        "- The second turn sees the first as history",
    ),
}


def picture_script(record) -> Script:
    """The scripted answer of one section to one question."""
    answer, points = PICTURE_ANSWERS[record.prompt]
    return Script(text=answer if base.system_of(record) == "task_a" else points, tokens_per_s=400)


def test_the_chat_with_its_list_lays_out_cleanly_and_makes_the_readme_picture(page, serve, tmp_path):
    """Sidebar and conversation side by side, nothing under the composer; UPDATE_SCREENSHOT=1 writes docs/."""
    with OpenAIServer(picture_script) as llm:
        pipelines = base.untrusted_pipeline([("task_a", "Answer"), ("task_b", "Key points")])
        pipelines["pipelines"][0].update(slug="assistant", name="Assistant")
        server = serve(pipelines, OPENAI_BASE_URL=llm.base_url, OPENAI_API_KEY="test")
        page.set_viewport_size({"width": 1280, "height": 960})
        open_chat(page, server)
        page.select_option("#pipeline", "assistant")
        questions = list(PICTURE_ANSWERS)
        for question in questions[:2]:
            ask(page, question, 1)
            page.get_by_role("button", name="New chat").click()
        ask(page, questions[2], 1)
        ask(page, questions[3], 2)
        expect(page.locator("#conversations .conv-title")).to_have_text(
            [questions[2], questions[1], questions[0]]
        )
    cid = conversation_id(page)
    recorded(page, server, cid, "completed", 2)
    page.reload()  # the picture is of a restored chat: what a returning user sees
    expect(page.locator(TURN)).to_have_count(2)
    expect(page.locator("#conn")).to_have_attribute("data-state", "open")
    page.locator("#prompt").focus()

    box = {
        name: page.locator(sel).bounding_box()
        for name, sel in [
            ("sidebar", "#sidebar"),
            ("main", "#main"),
            ("composer", "#composer"),
            ("topbar", ".topbar"),
        ]
    }
    assert box["sidebar"]["x"] == 0 and box["sidebar"]["height"] == 960
    for other in ("main", "composer", "topbar"):
        assert box[other]["x"] >= box["sidebar"]["x"] + box["sidebar"]["width"], other
    # Scrolled to the latest turn: its end is above the composer, not hidden under it.
    last = page.locator(f"{TURN} .task").last.bounding_box()
    assert last["y"] + last["height"] <= page.locator("#composer").bounding_box()["y"]
    links = page.locator("#conversations .conv-link")
    assert all(links.nth(i).bounding_box()["width"] <= box["sidebar"]["width"] for i in range(3))
    expect(page.locator('#conversations [aria-current="page"]')).to_have_attribute("data-id", cid)
    visible_text_without_template_syntax(page)

    # Rewritten only on request, so that a test run leaves the tree clean.
    target = SCREENSHOT if os.environ.get("UPDATE_SCREENSHOT") else tmp_path / "screenshot.png"
    page.screenshot(path=str(target))
    assert target.stat().st_size > 10_000
