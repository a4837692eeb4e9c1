/* Copy to the clipboard: the Clipboard API, or a hidden text area and execCommand where the API
 * is missing (plain http on another host than localhost, older browsers). */

const CONFIRM_MS = 1500;

async function write(text) {
  if (navigator.clipboard && window.isSecureContext) {
    await navigator.clipboard.writeText(text);
    return;
  }
  const area = document.createElement("textarea");
  area.value = text;
  area.setAttribute("readonly", "");
  area.className = "clipboard-fallback";
  const focused = document.activeElement;
  document.body.append(area);
  area.select();
  try {
    if (!document.execCommand("copy")) throw new Error("copy refused");
  } finally {
    area.remove();
    if (focused instanceof HTMLElement) focused.focus();
  }
}

/** A button that copies `getText()`; it shows "Copied" (or "Copy failed") for a moment and
 * tells `announce`. `label` is its accessible name; `visible` its text when it has room for one. */
export function copyButton({ label, visible, className, getText, announce }) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = `copy ${className || ""}`.trim();
  button.setAttribute("aria-label", label);
  // The visible text lives in CSS (data-label): inside the answer's Markdown a text node would
  // become part of the answer's own text.
  button.dataset.label = visible || label;
  let timer = null;
  button.addEventListener("click", async () => {
    let ok = true;
    try {
      await write(getText());
    } catch {
      ok = false;
    }
    button.dataset.state = ok ? "copied" : "failed";
    button.dataset.label = ok ? "Copied" : "Copy failed";
    if (announce) announce(ok ? "Copied to the clipboard." : "Could not copy to the clipboard.");
    clearTimeout(timer);
    timer = setTimeout(() => {
      delete button.dataset.state;
      button.dataset.label = visible || label;
    }, CONFIRM_MS);
  });
  return button;
}

/** Give every code block of a rendered fragment a header with its language and a "Copy code"
 * button (its code, as written). The language is CSS text too (data-lang), not the answer's. */
export function addCodeCopy(fragment, announce) {
  for (const pre of fragment.querySelectorAll("pre")) {
    const code = pre.querySelector("code") || pre;
    const lang = /(?:^|\s)language-([\w+#.-]+)/.exec(code.className);
    const box = document.createElement("div");
    box.className = "code-block";
    const head = document.createElement("div");
    head.className = "code-head";
    head.dataset.lang = lang ? lang[1] : "";
    pre.replaceWith(box);
    // markdown-it ends a fence's code with the newline before the closing fence: not the code's.
    const text = () => code.textContent.replace(/\n$/, "");
    head.append(copyButton({ label: "Copy code", visible: "Copy", className: "copy-code", getText: text, announce }));
    box.append(head, pre);
  }
}
