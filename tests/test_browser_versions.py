"""Versions of a turn on the chat page (protocol v3), in headless Chromium against real daphne
and Redis: Regenerate, Edit, the "2 / 2" version switcher, and history that follows the branch on
screen. The upstream echoes its prompt, so each answer shows the history the model was sent."""

import re

import pytest
from playwright.sync_api import Page, expect

import tests.test_browser as base
from tests.test_browser import open_chat
from tests.test_browser_chat import TURN, ask, history_server, serve_history

pytestmark = [pytest.mark.browser, pytest.mark.redis]

browser, page, serve = base.browser, base.page, base.serve


def answer(page: Page, turn: int) -> str:
    """The answer of a turn (the echoed prompt: history and question)."""
    return page.locator(TURN).nth(turn).locator(".task .md").text_content().strip()


def versions(page: Page, turn: int):
    """The version counter of a turn ("2 / 2")."""
    return page.locator(TURN).nth(turn).locator(".version-count")


def start_chat(page: Page, serve, llm) -> None:
    """The history pipeline, two turns asked."""
    open_chat(page, serve_history(serve, llm))
    page.select_option("#pipeline", "history")
    ask(page, "First?", 1)
    ask(page, "Second?", 2)


def wait_finished(page: Page, turns: int) -> None:
    """Every turn on screen has ended, and there are `turns` of them."""
    status = page.locator(f"{TURN} .turn-status")
    expect(status).to_have_count(turns)
    expect(status.nth(turns - 1)).to_have_text(re.compile(r"^Finished"))


def test_regenerate_makes_a_second_version_and_the_switcher_steps_between_them(page, serve):
    """Regenerate the last turn: "2 / 2"; Previous shows version 1 with its own sections."""
    with history_server() as llm:
        start_chat(page, serve, llm)
        first_answer = answer(page, 1)
        regenerate = page.get_by_role("button", name="Regenerate")
        expect(regenerate).to_have_count(1)  # the last turn only
        regenerate.focus()
        page.keyboard.press("Enter")
        wait_finished(page, 2)
        expect(versions(page, 1)).to_have_text("2 / 2")
        assert answer(page, 1) == first_answer  # same input, same branch: same history
        assert len(llm.requests) == 3

        previous = page.get_by_role("button", name="Previous version")
        next_ = page.get_by_role("button", name="Next version")
        expect(next_).to_be_disabled()
        previous.click()
        expect(versions(page, 1)).to_have_text("1 / 2")
        expect(previous).to_be_disabled()
        expect(next_).to_be_focused()  # the keyboard user stays on the switcher
        expect(page.locator(TURN).nth(1).locator(".task")).to_have_count(1)
        assert answer(page, 1) == first_answer
        next_.click()
        expect(versions(page, 1)).to_have_text("2 / 2")


def test_edit_makes_a_new_branch_and_history_follows_the_branch_on_screen(page, serve):
    """Edit the first message: later turns leave; the next turn's history holds the edited branch
    only; the older version keeps its follow-up, and a message sent there continues that branch."""
    with history_server() as llm:
        start_chat(page, serve, llm)
        edit = page.locator(TURN).nth(0).get_by_role("button", name="Edit")
        edit.click()
        editor = page.get_by_role("textbox", name="Edit message")
        expect(editor).to_be_focused()
        expect(editor).to_have_value("First?")
        page.keyboard.press("Escape")  # cancels: nothing sent, the message as it was
        expect(editor).to_have_count(0)
        expect(page.locator(TURN)).to_have_count(2)

        edit.click()
        page.keyboard.press("Control+a")
        page.keyboard.type("Edited first")
        page.keyboard.press("Shift+Enter")
        page.keyboard.type("on two lines?")
        page.keyboard.press("Enter")
        wait_finished(page, 1)
        expect(page.locator(f"{TURN} .user-text")).to_have_text(["Edited first\non two lines?"])
        expect(versions(page, 0)).to_have_text("2 / 2")

        ask(page, "Third?", 2)
        third = answer(page, 1)
        assert third.startswith("History: User: Edited first\non two lines?\nAssistant: History:")
        assert "First?" not in third and "Second?" not in third

        page.get_by_role("button", name="Previous version").click()
        expect(versions(page, 0)).to_have_text("1 / 2")
        expect(page.locator(f"{TURN} .user-text")).to_have_text(["First?", "Second?"])
        page.locator("#prompt").focus()
        ask(page, "Fourth?", 3)
        fourth = answer(page, 2)
        assert "User: First?" in fourth and "User: Second?" in fourth and "Edited" not in fourth

        # A reload shows the conversation's newest branch: the one that "Fourth?" continued.
        page.reload()
        expect(page.locator(f"{TURN} .user-text")).to_have_text(["First?", "Second?", "Fourth?"])
        expect(versions(page, 0)).to_have_text("1 / 2")
