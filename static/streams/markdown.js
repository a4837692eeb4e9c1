/* Safe Markdown for untrusted model output (markdown-it, then DOMPurify), fenced code highlighted
 * by highlight.js, and a live renderer that re-renders only the last, growing block. */
import hljs from "./vendor/highlightjs/core.min.js";
import bash from "./vendor/highlightjs/languages/bash.min.js";
import css from "./vendor/highlightjs/languages/css.min.js";
import diff from "./vendor/highlightjs/languages/diff.min.js";
import javascript from "./vendor/highlightjs/languages/javascript.min.js";
import json from "./vendor/highlightjs/languages/json.min.js";
import python from "./vendor/highlightjs/languages/python.min.js";
import shell from "./vendor/highlightjs/languages/shell.min.js";
import sql from "./vendor/highlightjs/languages/sql.min.js";
import typescript from "./vendor/highlightjs/languages/typescript.min.js";
import xml from "./vendor/highlightjs/languages/xml.min.js";
import yaml from "./vendor/highlightjs/languages/yaml.min.js";

const LANGUAGES = { bash, css, diff, javascript, json, python, shell, sql, typescript, xml, yaml };
for (const [name, grammar] of Object.entries(LANGUAGES)) hljs.registerLanguage(name, grammar);

// A grammar compiles on its first use (milliseconds each): do it in idle time, one language per
// idle period, rather than inside the frame that finishes a stream's first code block.
const cold = Object.keys(LANGUAGES);
function warmUp() {
  const name = cold.shift();
  if (!name) return;
  hljs.highlight("", { language: name });
  requestIdleCallback(warmUp);
}
if (window.requestIdleCallback) requestIdleCallback(warmUp);

// Set while a finished block renders: a fence still streaming is shown plain (it would be
// highlighted again on every frame, and its colours would flicker while its end is unknown).
let highlighting = false;

const md = window.markdownit({
  html: false,
  linkify: true,
  typographer: false,
  highlight(code, lang) {
    if (!highlighting || !lang || !hljs.getLanguage(lang)) return ""; // "" = markdown-it escapes it
    return hljs.highlight(code, { language: lang, ignoreIllegals: true }).value;
  },
});
// Images in model output would fetch any URL the model names: a tracking and data
// exfiltration channel (prompt injection). Image syntax stays visible as text instead.
md.disable(["image"]);

// Model output is untrusted: markdown-it escapes raw HTML and refuses javascript:/data:
// links; DOMPurify then keeps only these tags and attributes, in case either misses something.
// <span> is highlight.js's only tag (html is off, so the model cannot write one).
const PURIFY = {
  ALLOWED_TAGS: [
    "a", "p", "br", "hr", "strong", "em", "del", "s", "code", "pre", "blockquote",
    "ul", "ol", "li", "h1", "h2", "h3", "h4", "h5", "h6",
    "table", "thead", "tbody", "tr", "th", "td", "span",
  ],
  ALLOWED_ATTR: ["href", "title", "start", "class", "target", "rel"],
  ALLOWED_URI_REGEXP: /^(?:https?:|mailto:|#)/i,
  ALLOW_DATA_ATTR: false,
  RETURN_DOM_FRAGMENT: true,
};
// Classes are the only styling hook: a fenced block's language on <code>, highlight.js's
// hljs-* scopes on <span>; nothing may borrow the page's own classes.
const CLASS_RULES = { CODE: /^language-[\w+#.-]+$/, SPAN: /^hljs-[\w-]+$/ };
window.DOMPurify.addHook("uponSanitizeAttribute", (node, data) => {
  if (data.attrName !== "class") return;
  const rule = CLASS_RULES[node.nodeName];
  const kept = rule ? data.attrValue.split(/\s+/).filter((name) => rule.test(name)) : [];
  if (kept.length) data.attrValue = kept.join(" ");
  else data.keepAttr = false;
});
window.DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A") {
    if (node.hasAttribute("href")) {
      node.setAttribute("target", "_blank");
      node.setAttribute("rel", "noopener noreferrer nofollow");
    } else {
      node.removeAttribute("target");
      node.removeAttribute("rel");
    }
  }
});

/** Sanitised DOM for a Markdown text; fenced code highlighted when `highlight` is true. */
export function renderMarkdown(text, highlight = true) {
  highlighting = highlight;
  try {
    return window.DOMPurify.sanitize(md.render(text), PURIFY);
  } finally {
    highlighting = false;
  }
}

const CLOSING_FENCE = /^ {0,3}(`{3,}|~{3,})[ \t]*$/;

/** How many leading characters of `text` are finished Markdown blocks: later text cannot change them. */
export function stableLength(text) {
  const blocks = md.parse(text, {}).filter((t) => t.level === 0 && t.nesting !== -1 && t.map);
  if (!blocks.length) return 0;
  const lines = text.split("\n");
  const offset = (line) => {
    let at = 0;
    for (let i = 0; i < line; i += 1) at += lines[i].length + 1;
    return at;
  };
  const last = blocks[blocks.length - 1];
  // A fence whose closing line is complete is finished even before anything follows it.
  if (last.type === "fence" && last.map[1] < lines.length && last.map[1] - 1 > last.map[0]) {
    const close = CLOSING_FENCE.exec(lines[last.map[1] - 1]);
    if (close && close[1][0] === last.markup[0] && close[1].length >= last.markup.length) {
      return offset(last.map[1]);
    }
  }
  // A block followed by a blank line and another top-level block is finished (a paragraph
  // cannot continue, nor turn into a setext heading, across a blank line); so is a fence that
  // another block follows (an unclosed fence would run to the end).
  for (let k = blocks.length - 2; k >= 0; k -= 1) {
    const start = blocks[k + 1].map[0];
    if (blocks[k].type === "fence" || (start > 0 && lines[start - 1].trim() === "")) return offset(start);
  }
  return 0;
}

/** A section's Markdown while it streams: finished blocks are rendered once and keep their DOM;
 * only the tail (the last, growing block) is rendered again, at most once per call of `render`.
 * Finished blocks sit in .md-block boxes that the browser may skip laying out while they are
 * off screen (content-visibility in answers.css): a long answer's cost per frame stays flat. */
export class LiveMarkdown {
  /** `host` receives the DOM; `decorate(fragment)` adds controls to newly finished blocks. */
  constructor(host, decorate = () => {}) {
    this.host = host;
    this.decorate = decorate;
    this.done = 0; // characters of the text already rendered for good
    this.tail = null; // element holding the growing block
    this.tailText = null;
  }

  /** Show `text` (the whole text so far; it only ever grows). */
  render(text) {
    let tail = text.slice(this.done);
    if (tail === this.tailText) return;
    const cut = stableLength(tail);
    if (cut > 0) {
      this.commit(tail.slice(0, cut));
      this.done += cut;
      tail = tail.slice(cut);
    }
    if (!this.tail) {
      this.tail = document.createElement("div");
      this.tail.className = "md-tail";
      this.host.append(this.tail);
    }
    this.tail.replaceChildren(renderMarkdown(tail, false));
    this.tailText = tail;
  }

  /** The text is complete: render what is left for good. */
  finish(text) {
    const rest = text.slice(this.done);
    if (this.tail) this.tail.remove();
    this.tail = null;
    this.tailText = null;
    if (rest) this.commit(rest);
    this.done = text.length;
  }

  commit(text) {
    const block = document.createElement("div");
    block.className = "md-block";
    block.append(renderMarkdown(text, true));
    this.decorate(block);
    this.host.insertBefore(block, this.tail);
  }
}
