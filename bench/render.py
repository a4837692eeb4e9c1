"""The chat page's Markdown renderer in headless Chromium: a 20,000-token answer streamed into
the page, 40 tokens per animation frame, rendered whole every frame (the page before the
incremental renderer) and with `LiveMarkdown` (static/streams/markdown.js), in alternating
rounds of one run. Prints per-frame render and layout times, long tasks (> 50 ms) and ratios.

    .venv/bin/python -m bench.render [--tokens 20000] [--per-frame 40] [--rounds 2]
"""

import argparse
import http.server
import logging
import tempfile
import threading
from functools import partial
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
log = logging.getLogger("bench.render")

PAGE = """<!doctype html><html><head><meta charset="utf-8">
<link rel="stylesheet" href="/static/streams/answers.css">
<script src="/static/streams/vendor/markdown-it/markdown-it.umd.min.js"></script>
<script src="/static/streams/vendor/dompurify/purify.min.js"></script>
</head><body><div class="task"><div class="md" id="host"></div></div></body></html>"""

RUN_JS = """
async ([text, perFrame, mode]) => {
  const { LiveMarkdown, renderMarkdown } = await import("/static/streams/markdown.js");
  const host = document.getElementById("host");
  host.replaceChildren();
  const live = new LiveMarkdown(host);
  const longtasks = [];
  const observer = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) longtasks.push(e.duration);
  });
  observer.observe({ type: "longtask" });
  const words = text.split(/(?<=\\s)/);
  const render = [], layout = [];
  let part = "";
  const doc = document.documentElement;
  for (let i = 0; i < words.length; i += perFrame) {
    part += words.slice(i, i + perFrame).join("");
    await new Promise(requestAnimationFrame);
    const t0 = performance.now();
    if (mode === "whole") host.replaceChildren(renderMarkdown(part, false));
    else live.render(part);
    const t1 = performance.now();
    doc.scrollTop = doc.scrollHeight; // follow the stream, as the page does
    render.push(t1 - t0);
    layout.push(performance.now() - t1);
  }
  if (mode === "whole") host.replaceChildren(renderMarkdown(text, true));
  else live.finish(text);
  await new Promise((resolve) => setTimeout(resolve, 200));
  observer.disconnect();
  const q = (a, p) => {
    const s = a.slice().sort((x, y) => x - y);
    return s[Math.min(s.length - 1, Math.floor(s.length * p))];
  };
  return { frames: render.length, render50: q(render, 0.5), render90: q(render, 0.9), renderMax: q(render, 1),
           layout50: q(layout, 0.5), layout90: q(layout, 0.9), longtasks: longtasks.length,
           longest: Math.max(0, ...longtasks) };
}
"""


def long_answer(words: int) -> str:
    """Markdown of about `words` words: paragraphs, lists and python blocks, as long answers are."""
    parts, count, n = [], 0, 0
    while count < words:
        n += 1
        if n % 7 == 0:
            body = "\n".join(f"    total_{i} = compute({i}, step={n})  # line {i}" for i in range(8))
            block = f"```python\ndef part_{n}():\n{body}\n    return total_0\n```"
        elif n % 5 == 0:
            block = "\n".join(f"- point {i} of section {n} with **bold** words" for i in range(6))
        else:
            block = " ".join(f"word{n}_{i}" if i % 9 else f"*stress{i}*" for i in range(60)) + "."
        parts.append(block)
        count += len(block.split())
    return "\n\n".join(parts) + "\n"


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Static files, no request log."""

    def log_message(self, format, *args):
        """Say nothing."""


def serve(directory: Path) -> http.server.ThreadingHTTPServer:
    """A static file server for `directory` on a free port, in a thread."""
    handler = partial(QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=20_000)
    parser.add_argument("--per-frame", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    text = long_answer(args.tokens)
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp)
        (site / "static").mkdir()
        (site / "static" / "streams").symlink_to(ROOT / "static" / "streams")
        (site / "index.html").write_text(PAGE)
        server = serve(site)
        results = {"whole": [], "live": []}
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=CHROMIUM, args=["--headless", "--no-sandbox"]
                )
                page = browser.new_page(viewport={"width": 1000, "height": 800})
                page.goto(f"http://127.0.0.1:{server.server_address[1]}/index.html")
                for _ in range(args.rounds):
                    for mode in ("whole", "live"):
                        results[mode].append(page.evaluate(RUN_JS, [text, args.per_frame, mode]))
                browser.close()
        finally:
            server.shutdown()
    log.info("%d tokens, %d per frame, %d rounds (ms per frame)", args.tokens, args.per_frame, args.rounds)
    log.info(
        "%-6s %9s %9s %9s %9s %9s %10s %8s",
        "mode",
        "render50",
        "render90",
        "renderMax",
        "layout50",
        "layout90",
        "longtasks",
        "longest",
    )
    for mode, rounds in results.items():
        for r in rounds:
            log.info(
                "%-6s %9.1f %9.1f %9.1f %9.1f %9.1f %10d %8.0f",
                mode,
                r["render50"],
                r["render90"],
                r["renderMax"],
                r["layout50"],
                r["layout90"],
                r["longtasks"],
                r["longest"],
            )
    med = {m: sorted(r["render50"] for r in rs)[len(rs) // 2] for m, rs in results.items()}
    log.info(
        "median render per frame: whole %.1f ms, live %.1f ms, ratio %.1fx",
        med["whole"],
        med["live"],
        med["whole"] / max(med["live"], 0.01),
    )


if __name__ == "__main__":
    main()
