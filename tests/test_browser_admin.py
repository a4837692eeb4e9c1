"""The admin in headless Chromium under the Content-Security-Policy: a pipeline's change page,
its inline tasks, and the "Try it" panel that streams the saved pipeline with the chat renderer.
Fixtures are tests/test_browser.py's."""

import re

import pytest
from playwright.sync_api import Page, expect

import tests.test_browser as base
from tests.support.live import manage
from tests.test_browser import WAIT_MS

pytestmark = [pytest.mark.browser, pytest.mark.redis]

browser, page, serve = base.browser, base.page, base.serve

ADMIN_USER, ADMIN_PASSWORD = "root", "pw-root-42"


def sign_in(page: Page, server) -> list[str]:
    """A superuser signs in to the admin; returns the list that collects CSP console reports."""
    manage(
        server.env,
        "shell",
        "-c",
        "from django.contrib.auth.models import User; "
        f"User.objects.create_superuser('{ADMIN_USER}', 'root@example.org', '{ADMIN_PASSWORD}')",
    )
    violations: list[str] = []
    page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
    page.goto(server.url + "/admin/")
    page.get_by_label("Username").fill(ADMIN_USER)
    page.get_by_label("Password").fill(ADMIN_PASSWORD)
    page.keyboard.press("Enter")
    expect(page.get_by_role("link", name="Pipelines")).to_be_visible()
    return violations


def open_pipeline(page: Page, name: str = "Demo") -> None:
    """The pipeline's change page, from the list."""
    page.get_by_role("link", name="Pipelines").click()
    page.get_by_role("link", name="demo").click()
    expect(page.get_by_role("heading", name=re.compile("Change pipeline"))).to_be_visible()


def test_edit_fallbacks_and_history_then_try_the_pipeline_from_its_change_page(page, serve):
    """A task gets a fallback and the history setting in the admin; Try it runs the saved pipeline:
    the input takes the focus, Enter runs it, the first task's provider is down, so its fallback
    answers, and the other sections stream in order with background progress."""
    server = serve(
        SIMULATED_TOKENS_PER_S="40",
        SIMULATED_TOKENS="40",
        SIMULATED_TTFT_S="0.1",
        OPENAI_BASE_URL="http://127.0.0.1:9/v1",  # nothing listens: the provider fails at once
        OPENAI_API_KEY="test",
        LLM_MAX_RETRIES="0",
    )
    violations = sign_in(page, server)
    open_pipeline(page)
    # The admin's own scripts work under the policy: inlines.js drew "Add another".
    expect(page.get_by_role("button", name=re.compile("Add another"))).to_be_visible()

    page.locator("#id_tasks-0-provider").select_option("openai")
    page.locator("#id_tasks-0-model").fill("gpt-unreachable")
    page.locator("#id_tasks-0-fallbacks").fill("simulated backup-model")
    page.locator("#id_tasks-0-history_messages").check()
    page.get_by_role("button", name="Save and continue editing").click()
    expect(page.locator(".messagelist")).to_contain_text("was changed successfully")
    expect(page.locator("#id_tasks-0-fallbacks")).to_have_value("simulated backup-model")
    expect(page.locator("#id_tasks-0-history_messages")).to_be_checked()

    page.get_by_text("Try it", exact=True).click()
    prompt = page.get_by_label("Input for Demo")
    expect(prompt).to_be_focused()
    expect(page.locator("#try-conn")).to_have_attribute("data-state", "open")
    page.keyboard.type("What does a pipeline do?")
    page.keyboard.press("Enter")
    output = page.locator("#try-output")
    expect(output.locator(".user-text")).to_have_text("What does a pipeline do?")
    expect(output.locator(".task")).to_have_count(4)
    expect(output.locator(".task").nth(1).locator(".bg-text")).to_have_text(
        re.compile(r"Waiting|tokens? so far|Finished with"), timeout=WAIT_MS
    )
    expect(output.locator(".turn-status")).to_have_text(re.compile(r"^Finished in"), timeout=WAIT_MS)
    first = output.locator(".task").first
    expect(first).to_have_attribute("data-state", "done")  # the fallback answered
    assert len(first.locator(".md").inner_text().split()) >= 10
    expect(first.get_by_role("button", name="Copy", exact=True)).to_be_visible()
    assert violations == [], violations
