/* The chat page: wires the socket (connection.js), the conversation view (view.js), versions
 * (versions.js), the composer (composer.js) and the sidebar (sidebar.js); owns which
 * conversation and which branch of it is on screen (?c=<id> in the URL). */
import { createComposer } from "./composer.js";
import { connect } from "./connection.js";
import { jumpToLatest, scrollToBottom } from "./scroll.js";
import { createSidebar } from "./sidebar.js";
import { createVersions } from "./versions.js";
import { createView } from "./view.js";

const config = JSON.parse(document.getElementById("chat-config").textContent);
const $ = (id) => document.getElementById(id);
const ui = {
  conversation: $("conversation"),
  empty: $("empty"),
  prompt: $("prompt"),
  conn: $("conn"),
  connText: $("conn-text"),
  announcer: $("announcer"),
  notice: $("notice"),
  loading: $("loading"),
  jump: $("jump"),
};

function announce(message) {
  const p = document.createElement("p");
  p.textContent = message;
  ui.announcer.append(p);
  // Old messages are already spoken; keep the region small.
  while (ui.announcer.childElementCount > 6) ui.announcer.firstElementChild.remove();
}

// The conversation on screen; null for a new chat until its first run.accepted names it.
let conversationId = null;
let viewSerial = 0; // bumped on every switch: a load for an earlier view is dropped
let loadFailed = false;

const socket = connect({
  loginUrl: config.loginUrl,
  onFrame: (frame) => view.handleFrame(frame),
  onOpen(reopened) {
    if (reopened && view.active) announce("Reconnected.");
    view.opened();
  },
  onDrop(wasOpen) {
    view.dropped();
    if (wasOpen && view.active) announce("Connection lost. Reconnecting…");
  },
  onState(state, text) {
    ui.conn.dataset.state = state;
    ui.connText.textContent = text;
  },
});

const view = createView({
  list: ui.conversation,
  send: (frame) => socket.send(frame),
  announce,
  onBusy(busy) {
    composer.setBusy(busy);
    versions.refresh();
    updateJump();
  },
  onJoined,
  onEnded(turn) {
    if (!turn.runId) composer.giveBack(turn.input); // nothing was answered: give the text back
    sidebar.refresh();
  },
  onTurn() {
    ui.empty.hidden = true;
    versions.refresh();
  },
});

const composer = createComposer({
  form: $("composer"),
  prompt: ui.prompt,
  pipeline: $("pipeline"),
  send: $("send"),
  stop: $("stop"),
  maxInputChars: config.maxInputChars,
  announce,
  onSubmit(pipeline, input) {
    if (view.active) return false;
    // A message continues the branch on screen, whichever version of each turn it shows.
    const last = view.list().at(-1);
    view.start(pipeline, input, { conversation: conversationId, after: last ? last.runId : null });
    return true;
  },
  onStop: () => view.stop(),
});

const versions = createVersions({
  view,
  busy: () => Boolean(view.active),
  onRegenerate: (turn) => newVersion(turn, turn.input),
  onEdit: newVersion,
  onSwitch: (turn, runId) => openConversation(conversationId, false, runId),
});

// A new version of `turn`: it and what followed it leave the screen; the new run takes its place.
function newVersion(turn, input) {
  if (view.active) return;
  const extra = { conversation: turn.conversation, replaces: turn.runId, versions: turn.versions };
  view.removeFrom(turn);
  view.start(turn.pipeline, input, extra);
  ui.prompt.focus({ preventScroll: true });
}

const updateJump = jumpToLatest(ui.jump, () => Boolean(view.active), ui.prompt);

const sidebar = createSidebar({
  listUrl: config.conversationsUrl,
  onSelect(id) {
    if (id !== conversationId || loadFailed) openConversation(id, true);
    ui.prompt.focus(); // next comes the message (and a closed drawer keeps no focus)
  },
  onNew: () => newChat(true),
});

document.addEventListener("keydown", (event) => {
  if (event.key !== "Escape") return;
  if (sidebar.isOpen()) {
    event.preventDefault();
    sidebar.close();
  } else if (view.active) {
    event.preventDefault();
    composer.stop();
  }
});

// ---------------------------------------------------------------- conversations

function conversationFromUrl() {
  return new URLSearchParams(location.search).get("c") || null;
}

function setUrl(id, push) {
  const params = new URLSearchParams(location.search);
  if (id) params.set("c", id);
  else params.delete("c");
  const query = params.toString();
  const url = `${location.pathname}${query ? `?${query}` : ""}${location.hash}`;
  if (url === location.pathname + location.search + location.hash) return;
  if (push) history.pushState(null, "", url);
  else history.replaceState(null, "", url);
}

// The server's title of a conversation (its first input), until the list is fetched again.
function titleOf(input) {
  return input.slice(0, 400).split(/\s+/).filter(Boolean).join(" ").slice(0, 200);
}

// run.accepted named the turn's conversation: a new chat has its id (and its URL) from now on.
function onJoined(turn, id) {
  const fresh = !turn.conversation;
  turn.conversation = id;
  if (fresh && conversationId === null) {
    conversationId = id;
    setUrl(id, false);
    sidebar.setCurrent(id);
  }
  sidebar.touch(id, titleOf(turn.input));
}

function clearView() {
  viewSerial += 1;
  view.clear();
  ui.empty.hidden = false;
  ui.notice.hidden = true;
  ui.loading.hidden = true;
  loadFailed = false;
}

function showNotice(text) {
  ui.notice.textContent = text;
  ui.notice.hidden = false;
}

function newChat(push) {
  clearView();
  conversationId = null;
  setUrl(null, push);
  sidebar.setCurrent(null);
  ui.prompt.focus();
}

async function fetchConversation(id, branch) {
  let url = `${config.conversationsUrl}/${encodeURIComponent(id)}`;
  if (branch) url += `?branch=${encodeURIComponent(branch)}`;
  for (let attempt = 0; ; attempt += 1) {
    const response = await fetch(url, {
      credentials: "same-origin",
      cache: "no-store",
      headers: { Accept: "application/json" },
    });
    if (response.ok) return response.json();
    // A chat whose first run started a moment ago (on another instance) may not be written yet.
    if (response.status === 404 && attempt === 0) {
      await new Promise((resolve) => setTimeout(resolve, 600));
      continue;
    }
    const error = new Error(`HTTP ${response.status}`);
    error.status = response.status;
    throw error;
  }
}

/** Show a conversation: its current branch, or with `branch` (a run id) the branch through it. */
async function openConversation(id, push, branch = null) {
  const focus = branch ? focusedControl() : null; // the version switcher's button
  const scroll = branch ? window.scrollY : 0;
  const mine = viewSerial + 1;
  let detail = null;
  let failure = null;
  if (!branch) {
    clearView();
    conversationId = id;
    setUrl(id, push);
    sidebar.setCurrent(id);
    ui.empty.hidden = true;
    ui.loading.hidden = false;
    ui.conversation.setAttribute("aria-busy", "true");
  } else {
    viewSerial = mine;
  }
  try {
    detail = await fetchConversation(id, branch);
  } catch (error) {
    failure = error;
  }
  if (mine !== viewSerial) return;
  ui.loading.hidden = true;
  ui.conversation.removeAttribute("aria-busy");
  if (detail) {
    if (branch) clearView();
    restore(detail, !branch);
    if (branch) {
      window.scrollTo(0, scroll);
      refocus(focus);
    }
  } else if (failure && failure.status === 404) {
    newChat(false);
    showNotice("That chat does not exist (or belongs to someone else). This is a new chat.");
  } else if (branch) {
    announce("That version could not be loaded. Try again.");
  } else {
    loadFailed = true;
    ui.empty.hidden = true;
    showNotice("This chat could not be loaded. Select it again or reload the page to retry.");
  }
}

// Which control of which turn has the focus, to find it again once the view is redrawn.
function focusedControl() {
  const active = document.activeElement;
  const turn = active && active.closest ? active.closest(".turn") : null;
  if (!turn) return null;
  return { turn: [...ui.conversation.children].indexOf(turn), className: active.classList[1] };
}

// The same control in the redrawn view (or, disabled now, its enabled neighbour): the keyboard
// user stays on the version switcher.
function refocus(focus) {
  const turn = focus ? ui.conversation.children[focus.turn] : null;
  if (!turn) return;
  const same = focus.className ? turn.querySelector(`.${focus.className}`) : null;
  const target = same && !same.disabled ? same : turn.querySelector(".versions button:not([disabled])");
  if (target) target.focus();
}

function restore(detail, follow) {
  const list = Array.isArray(detail.turns) ? detail.turns : [];
  for (const t of list) view.restoreTurn(t, detail.id);
  ui.empty.hidden = list.length > 0;
  const last = list[list.length - 1];
  if (last) composer.pick(last.pipeline);
  if (follow) scrollToBottom();
  announce(`Chat loaded: ${list.length} message${list.length === 1 ? "" : "s"}.`);
}

window.addEventListener("popstate", () => {
  const id = conversationFromUrl();
  if (id === conversationId) return;
  if (id) openConversation(id, false);
  else newChat(false);
});

// ---------------------------------------------------------------- test hooks

// Lets browser tests drop the connection for real (the server sees a close) and inspect state.
window.streamsChat = {
  drop: (holdMs) => socket.drop(holdMs),
  resume(afterSeq) {
    const turn = view.active;
    if (turn && turn.runId) socket.send({ type: "run.resume", run_id: turn.runId, after_seq: afterSeq, ref: turn.ref });
  },
  get connected() {
    return socket.connected;
  },
  get opens() {
    return socket.opens;
  },
  get lastSeq() {
    return view.active ? view.active.lastSeq : null;
  },
  get conversation() {
    return conversationId;
  },
};

const initial = conversationFromUrl();
if (initial) openConversation(initial, false);
sidebar.refresh();
