"""Screenshots of the chat page for docs/screenshots/: desktop (1280x900) and phone (390x844),
light and dark, in Debian's headless Chromium against a real daphne and Redis.

    REDIS_URL=redis://127.0.0.1:6379/0 .venv/bin/python scripts/screenshots.py [OUT_DIR]

The answers come from a local OpenAI-compatible test server (tests/support), so the pictures are
the same on every run: a Markdown answer with a list and highlighted Python, regenerated once
(its version switcher shows "2 / 2"), and a second section.
"""

import logging
import os
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from playwright.sync_api import expect, sync_playwright  # noqa: E402

from tests.support.live import LiveServer, app_env, prepare_database  # noqa: E402
from tests.support.openai_server import OpenAIServer, Script  # noqa: E402

log = logging.getLogger("screenshots")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu"]
FINISHED = re.compile(r"^Finished")
QUESTION = "How do I retry a flaky HTTP call in Python?"
ANSWER = """Wrap the call in a small loop that **backs off** between attempts:

- retry only errors that can pass (timeouts, 429, 5xx);
- wait a little longer each time, with some jitter;
- give up after a few tries and raise the last error.

```python
def with_retries(call, attempts=4, base_s=0.5):
    for attempt in range(attempts):
        try:
            return call()
        except TimeoutError:
            if attempt == attempts - 1:
                raise
            time.sleep(base_s * 2**attempt * random.uniform(0.5, 1.5))
```

Libraries such as `tenacity` do the same with decorators.
"""
POINTS = "Retry transient errors only, back off with jitter, cap the attempts."
PIPELINES = {
    "pipelines": [
        {
            "slug": "assistant",
            "name": "Assistant",
            "tasks": [
                {"key": key, "title": title, "provider": "openai", "model": "test-model", "system": key}
                for key, title in (("answer", "Answer"), ("points", "Key points"))
            ],
        }
    ]
}
VIEWPORTS = {"desktop": {"width": 1280, "height": 900}, "phone": {"width": 390, "height": 844}}


def script_for(record) -> Script:
    """The answer for a request, by the task's system prompt."""
    system = next((m["content"] for m in record.body["messages"] if m["role"] == "system"), "")
    return Script(text=POINTS if system == "points" else ANSWER, tokens_per_s=0)


def take(out_dir: Path, redis_url: str) -> list[Path]:
    """Run the app, build the conversation once, photograph it in each size and scheme."""
    written = []
    with tempfile.TemporaryDirectory() as tmp, OpenAIServer(script_for) as llm:
        database_url = prepare_database(Path(tmp), redis_url, PIPELINES)
        env = app_env(database_url, redis_url, OPENAI_BASE_URL=llm.base_url, OPENAI_API_KEY="test")
        with LiveServer(env) as server, sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM, args=["--headless", "--no-sandbox"]
            )
            context = browser.new_context(viewport=VIEWPORTS["desktop"], reduced_motion="reduce")
            page = context.new_page()
            page.goto(server.url + "/")
            expect(page.locator("#conn")).to_have_attribute("data-state", "open")
            page.select_option("#pipeline", "assistant")
            page.locator("#prompt").fill(QUESTION)
            page.keyboard.press("Enter")
            status = page.locator(".turn-status")
            expect(status).to_have_text(FINISHED, timeout=30_000)
            page.get_by_role("button", name="Regenerate").click()
            expect(page.locator(".version-count")).to_have_text("2 / 2", timeout=30_000)
            expect(status).to_have_text(FINISHED, timeout=30_000)
            url = page.url
            session = context.storage_state()  # the chat belongs to this visitor's session
            context.close()
            for size, viewport in VIEWPORTS.items():
                for scheme in ("light", "dark"):
                    context = browser.new_context(
                        viewport=viewport, color_scheme=scheme, reduced_motion="reduce", storage_state=session
                    )
                    shot = context.new_page()
                    shot.goto(url)
                    expect(shot.locator(".version-count")).to_have_text("2 / 2")
                    shot.locator("#prompt").blur()
                    shot.evaluate("() => window.scrollTo(0, 0)")  # the question first
                    target = out_dir / f"chat-{size}-{scheme}.png"
                    shot.screenshot(path=str(target))
                    written.append(target)
                    context.close()
            browser.close()
    return written


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "screenshots"
    out_dir.mkdir(parents=True, exist_ok=True)
    redis_url = os.environ.get("REDIS_URL")
    if not redis_url:
        sys.exit("Set REDIS_URL (a Redis database this script may use).")
    for path in take(out_dir, redis_url):
        log.info("wrote %s", path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)


if __name__ == "__main__":
    main()
