/* Chat page sidebar: the owner's conversations (GET /api/conversations), "New chat", and on
 * narrow screens a drawer. chat.js owns what a conversation shows; this module owns the list.
 * Titles are the user's own text: only ever set as textContent. */
const NARROW = window.matchMedia("(max-width: 899px)");

function when(seconds) {
  const date = new Date(seconds * 1000);
  const now = new Date();
  if (date.toDateString() === now.toDateString()) {
    return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }
  const options = { month: "short", day: "numeric" };
  if (date.getFullYear() !== now.getFullYear()) options.year = "numeric";
  return date.toLocaleDateString([], options);
}

/** Wire the sidebar; `onSelect(id)` opens a conversation, `onNew()` starts an empty one. */
export function createSidebar({ listUrl, onSelect, onNew }) {
  const $ = (id) => document.getElementById(id);
  const nav = $("sidebar");
  const list = $("conversations");
  const note = $("conversations-note");
  const toggle = $("sidebar-toggle");
  const scrim = $("scrim");
  const newButton = $("new-chat");

  let items = []; // [{id, title, updated}] as the server listed them, newest first
  const local = new Map(); // id -> entry this page knows of that the server did not list yet
  let current = null;
  let generation = 0; // answers of older refreshes are dropped

  function entries() {
    const listed = new Set(items.map((c) => c.id));
    const extra = [...local.values()].filter((c) => !listed.has(c.id));
    return [...extra, ...items].sort((a, b) => b.updated - a.updated);
  }

  function render() {
    const all = entries();
    const rows = all.map((c) => {
      const li = document.createElement("li");
      const a = document.createElement("a");
      a.className = "conv-link";
      a.href = `${location.pathname}?c=${encodeURIComponent(c.id)}`;
      a.dataset.id = c.id;
      if (c.id === current) a.setAttribute("aria-current", "page");
      const title = document.createElement("span");
      title.className = "conv-title";
      title.textContent = c.title || "Untitled chat";
      a.title = title.textContent; // the whole title when the list cuts it short
      const time = document.createElement("time");
      time.className = "conv-time";
      time.dateTime = new Date(c.updated * 1000).toISOString();
      time.textContent = when(c.updated);
      a.append(title, time);
      li.append(a);
      return li;
    });
    list.replaceChildren(...rows);
    note.hidden = all.length > 0;
    if (!all.length) note.textContent = "No chats yet.";
  }

  async function refresh() {
    const mine = ++generation;
    try {
      const response = await fetch(listUrl, {
        credentials: "same-origin",
        cache: "no-store",
        headers: { Accept: "application/json" },
      });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const body = await response.json();
      if (mine !== generation) return;
      items = Array.isArray(body.conversations) ? body.conversations : [];
      for (const c of items) local.delete(c.id);
      render();
    } catch {
      if (mine !== generation) return;
      if (!items.length && !local.size) {
        note.textContent = "Your chats could not be loaded.";
        note.hidden = false;
      }
    }
  }

  /** The conversation was just used (a run started in it): move it to the top now. */
  function touch(id, title) {
    const known = items.find((c) => c.id === id) || local.get(id);
    const entry = { id, title: known ? known.title : title, updated: Date.now() / 1000 };
    if (known && items.includes(known)) known.updated = entry.updated;
    else local.set(id, entry);
    render();
  }

  function setCurrent(id) {
    current = id;
    for (const a of list.querySelectorAll(".conv-link")) {
      if (a.dataset.id === id) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    }
  }

  // ------------------------------------------------------------ drawer (narrow screens)

  function isOpen() {
    return NARROW.matches && nav.dataset.open === "true";
  }

  function open() {
    nav.dataset.open = "true";
    toggle.setAttribute("aria-expanded", "true");
    scrim.hidden = false;
    const target = nav.querySelector('[aria-current="page"]') || newButton;
    target.focus();
  }

  function close() {
    const hadFocus = nav.contains(document.activeElement);
    nav.dataset.open = "false";
    toggle.setAttribute("aria-expanded", "false");
    scrim.hidden = true;
    if (hadFocus && NARROW.matches) toggle.focus();
  }

  toggle.addEventListener("click", () => (nav.dataset.open === "true" ? close() : open()));
  scrim.addEventListener("click", close);
  NARROW.addEventListener("change", () => {
    if (!NARROW.matches) close();
  });

  list.addEventListener("click", (event) => {
    const a = event.target.closest(".conv-link");
    // Let the browser handle a new tab or window (modifier keys, middle button).
    if (!a || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
    event.preventDefault();
    nav.dataset.open = "false";
    toggle.setAttribute("aria-expanded", "false");
    scrim.hidden = true;
    onSelect(a.dataset.id);
  });
  newButton.addEventListener("click", () => {
    nav.dataset.open = "false";
    toggle.setAttribute("aria-expanded", "false");
    scrim.hidden = true;
    onNew();
  });

  return { refresh, touch, setCurrent, isOpen, close };
}
