/* The conversation view: turns and their task sections, driven by the protocol's frames
 * (docs/protocol.md). Live text renders at most once per frame, only its growing block. */
import { addCodeCopy, copyButton } from "./clipboard.js";
import { LiveMarkdown } from "./markdown.js";
import { nearBottom, scrollToBottom } from "./scroll.js";

export function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function summary(text, limit = 600) {
  const plain = text.replace(/\s+/g, " ").trim();
  return plain.length > limit ? plain.slice(0, limit) + "…" : plain;
}

const STATE_LABELS = {
  starting: "Starting…",
  background: "Running in the background",
  live: "Streaming",
  done: "Done",
  failed: "Failed",
  stopped: "Stopped",
};

const BG_DETAIL = {
  waiting: () => "Waiting for its inputs",
  running: (n) => `${n} token${n === 1 ? "" : "s"} so far`,
  done: (n) => `Finished with ${n} token${n === 1 ? "" : "s"}; shown after the sections above`,
  failed: () => "Failed; details follow after the sections above",
};

/**
 * A view of turns in `list` (an <ol>). Callbacks:
 * - `send(frame)`: to the socket, false when offline;
 * - `announce(text)`: to the live region;
 * - `onBusy(busy)`: a run is in flight (or no longer);
 * - `onJoined(turn, conversationId)`: run.accepted named the turn's conversation;
 * - `onEnded(turn)`: a turn ended (`turn.runId` is null when it never reached the server);
 * - `onTurn(turn)`: a turn was drawn or changed state (controls such as Edit hang on it).
 */
export function createView({ list, send, announce, onBusy, onJoined, onEnded, onTurn }) {
  const turns = new Map(); // ref -> turn
  const byRun = new Map(); // run_id -> turn
  let counter = 0;
  let active = null; // the turn whose run is in flight (one at a time)

  // Re-render sections whose text changed, at most once per frame, however fast tokens arrive.
  const dirty = new Set();
  let frameRequested = false;
  function markDirty(section) {
    dirty.add(section);
    if (!frameRequested) {
      frameRequested = true;
      requestAnimationFrame(flushRender);
    }
  }
  function flushRender() {
    frameRequested = false;
    const stick = nearBottom();
    for (const section of dirty) section.live.render(section.text);
    dirty.clear();
    if (stick) scrollToBottom();
  }
  function finishText(section) {
    dirty.delete(section);
    section.live.finish(section.text);
    section.copy.hidden = !section.text;
  }

  function newTurn(pipeline, input, extra = {}) {
    counter += 1;
    const ref = `t${counter}-${Math.random().toString(36).slice(2, 10)}`;
    const li = el("li", "turn");
    li.dataset.ref = ref;
    const user = el("div", "msg-user");
    const userText = el("p", "user-text", input);
    user.append(el("p", "who visually-hidden", "You"), userText);
    const reply = el("div", "reply");
    reply.setAttribute("aria-label", "Reply");
    const status = el("p", "turn-status");
    status.dataset.state = "sending";
    status.textContent = "Sending…";
    const tools = el("div", "turn-tools");
    reply.append(status, tools);
    li.append(user, reply);
    list.append(li);
    const turn = {
      ref, pipeline, input, el: li, user, userText, reply, status, tools,
      runId: null, lastSeq: 0, sections: new Map(), order: [],
      startSent: false, ended: false, stopRequested: false, dropped: false,
      resumeAskedAt: 0, startedAt: performance.now(),
      versions: [], conversation: null, replaces: null, after: null,
      ...extra,
    };
    turns.set(ref, turn);
    return turn;
  }

  function setTurnStatus(turn, state, text) {
    turn.status.dataset.state = state;
    turn.status.textContent = text;
  }

  function buildSections(turn, tasks) {
    tasks.forEach((task, index) => {
      const section = el("section", "task");
      const id = `${turn.ref}-${task.key}`;
      section.dataset.task = task.key;
      section.setAttribute("aria-labelledby", `${id}-title`);
      const head = el("header", "task-head");
      const title = el("h2", "task-title", task.title || task.key);
      title.id = `${id}-title`;
      const badge = el("span", "badge");
      head.append(title, badge);
      const bg = el("div", "task-bg");
      const bgBar = el("div", "bg-bar");
      bgBar.append(el("span"));
      const bgText = el("p", "bg-text");
      bg.append(bgBar, bgText);
      const body = el("div", "md");
      const error = el("p", "task-error");
      error.hidden = true;
      const note = el("p", "task-note");
      note.hidden = true;
      const foot = el("div", "task-foot");
      const meta = el("p", "task-meta");
      meta.hidden = true;
      const entry = {
        key: task.key, title: task.title || task.key, el: section, badge, bg, bgText, body, note, error, meta,
        text: "", state: "pending", live: new LiveMarkdown(body, (fragment) => addCodeCopy(fragment, announce)),
      };
      // The answer's Markdown source, as the model wrote it.
      entry.copy = copyButton({ label: "Copy", className: "copy-answer", getText: () => entry.text, announce });
      entry.copy.hidden = true;
      foot.append(entry.copy, meta);
      section.append(head, bg, body, note, error, foot);
      turn.reply.insertBefore(section, turn.status);
      turn.sections.set(task.key, entry);
      turn.order.push(task.key);
      if (index === 0) setSectionState(entry, "starting");
      else setSectionState(entry, "background", { state: "waiting", tokens: 0 });
    });
  }

  function setSectionState(section, state, progress) {
    section.state = state;
    section.el.dataset.state = state;
    section.el.setAttribute("aria-busy", state === "live" || state === "starting" ? "true" : "false");
    section.badge.textContent = STATE_LABELS[state] || state;
    section.bg.hidden = state !== "background" && state !== "starting";
    if (state === "background") {
      const p = progress || { state: "waiting", tokens: 0 };
      section.el.dataset.progress = p.state;
      section.bgText.textContent = (BG_DETAIL[p.state] || BG_DETAIL.running)(p.tokens || 0);
    } else if (state === "starting") {
      section.bgText.textContent = "Waiting for the first token";
    }
  }

  // ---------------------------------------------------------------- frames

  function handleFrame(frame) {
    switch (frame.type) {
      case "run.accepted":
        return onAccepted(frame);
      case "run.progress":
        return onProgress(frame);
      case "error":
        return onError(frame);
      case "pong":
        return undefined;
      default:
        if (typeof frame.seq === "number" && typeof frame.run_id === "string") return onOrdered(frame);
        return undefined;
    }
  }

  function onAccepted(frame) {
    const turn = turns.get(frame.ref);
    if (!turn || turn.runId) return;
    turn.runId = frame.run_id;
    turn.versions = [...turn.versions, frame.run_id];
    byRun.set(frame.run_id, turn);
    buildSections(turn, frame.tasks || []);
    setTurnStatus(turn, "running", "");
    if (typeof frame.conversation === "string" && frame.conversation) onJoined(turn, frame.conversation);
    if (turn.stopRequested) send({ type: "run.cancel", run_id: turn.runId, ref: turn.ref });
    onTurn(turn);
  }

  function onProgress(frame) {
    const turn = byRun.get(frame.run_id);
    if (!turn || turn.ended) return;
    for (const [key, progress] of Object.entries(frame.tasks || {})) {
      const section = turn.sections.get(key);
      // Only sections still held back; the ordered frames own every later state.
      if (section && section.state === "background") setSectionState(section, "background", progress);
    }
  }

  function onError(frame) {
    const turn = frame.ref ? turns.get(frame.ref) : null;
    if (!turn || turn.ended) return;
    if (!turn.runId) {
      const gone = "This chat no longer exists or belongs to someone else. Start a new chat to go on.";
      const stale = "That message is no longer part of this chat. Reload the chat and try again.";
      const why = { unknown_conversation: gone, unknown_run: stale }[frame.code];
      failTurn(turn, why || frame.message || "The message was refused.");
    } else if (frame.code === "unknown_run") {
      // The run is gone (grace period over, or its log expired): nothing more will come.
      failTurn(turn, "The connection was lost for too long; this reply could not be resumed.");
    }
  }

  function onOrdered(frame) {
    const turn = byRun.get(frame.run_id);
    if (!turn || turn.ended) return;
    if (frame.seq <= turn.lastSeq) return; // already shown (a replay overlapped the live stream)
    if (frame.seq !== turn.lastSeq + 1) {
      // A frame is missing: ask for everything after the last one we have, ignore this one.
      resume(turn, false);
      return;
    }
    turn.lastSeq = frame.seq;
    const section = frame.task ? turn.sections.get(frame.task) : null;
    switch (frame.type) {
      case "task.started":
        if (section) setSectionState(section, "live");
        break;
      case "task.delta":
        if (section && typeof frame.text === "string") {
          if (section.state !== "live") setSectionState(section, "live");
          section.text += frame.text;
          markDirty(section);
        }
        break;
      case "task.completed":
        if (section) completeSection(section, frame.stats || {});
        break;
      case "task.failed":
        if (section) failSection(section, frame.error || {});
        break;
      case "run.completed":
        endTurn(turn, "completed");
        break;
      case "run.failed":
        endTurn(turn, "failed", frame.error);
        break;
      case "run.cancelled":
        endTurn(turn, "cancelled");
        break;
      default:
        break;
    }
  }

  // What a section shows when its task completed; live and restored alike. True for a `length` cut.
  function showCompleted(section, stats) {
    finishText(section);
    setSectionState(section, "done");
    const parts = [];
    if (typeof stats.tokens === "number") parts.push(`${stats.tokens} tokens`);
    if (typeof stats.duration_ms === "number") parts.push(`${(stats.duration_ms / 1000).toFixed(1)} s`);
    if (typeof stats.ttft_ms === "number") parts.push(`first token ${Math.round(stats.ttft_ms)} ms`);
    section.meta.textContent = parts.join(" · ");
    section.meta.hidden = parts.length === 0;
    if (!section.text) section.body.textContent = "(no text)";
    // max_tokens cut the answer: it reads complete but is not.
    const cut = stats.finish_reason === "length";
    section.el.dataset.finish = typeof stats.finish_reason === "string" ? stats.finish_reason : "";
    section.note.hidden = !cut;
    if (cut) {
      section.badge.textContent = "Cut off";
      section.note.textContent = "Cut off: length limit";
    }
    return cut;
  }

  // The answer is announced once, when it ends: never token by token.
  function completeSection(section, stats) {
    const cut = showCompleted(section, stats);
    announce(`${section.title}${cut ? " (cut off: length limit)" : ""}: ${summary(section.text) || "no text"}`);
  }

  function showFailed(section, error) {
    finishText(section);
    setSectionState(section, "failed");
    section.error.textContent = error.message ? `${error.message} (${error.code || "error"})` : "This section failed.";
    section.error.hidden = false;
  }

  function failSection(section, error) {
    if (error.code === "cancelled") {
      finishText(section);
      setSectionState(section, "stopped");
      return;
    }
    showFailed(section, error);
    announce(`${section.title} failed: ${error.message || "error"}.`);
  }

  // A run whose sections all ended by themselves is finished, even when the server calls it
  // failed because one of them failed: that section already shows its own error.
  function finishedStatus(turn, took) {
    const failed = [...turn.sections.values()].filter((s) => s.state === "failed").length;
    return failed
      ? ["partial", `Finished${took}; ${failed} section${failed === 1 ? "" : "s"} failed.`]
      : ["completed", `Finished${took}.`];
  }

  function endTurn(turn, how, error) {
    turn.ended = true;
    let cutShort = 0; // sections the run's end closed, rather than their own last frame
    for (const section of turn.sections.values()) {
      if (section.state === "background" || section.state === "starting" || section.state === "live") {
        finishText(section);
        cutShort += 1;
        setSectionState(section, how === "cancelled" ? "stopped" : "failed");
      }
    }
    // A restored run started before this page: its duration is not known here.
    const took = turn.restored ? "" : ` in ${((performance.now() - turn.startedAt) / 1000).toFixed(1)} s`;
    if (how === "completed" || (how === "failed" && cutShort === 0 && turn.sections.size > 0)) {
      setTurnStatus(turn, ...finishedStatus(turn, took));
    } else if (how === "cancelled" && (turn.stopRequested || !turn.dropped)) {
      setTurnStatus(turn, "cancelled", "Stopped. The run was cancelled.");
      announce("Stopped.");
    } else if (how === "cancelled") {
      // Without a resume grace period the server cancels a run as soon as its socket closes.
      const text = "The server cancelled this run when the connection dropped.";
      setTurnStatus(turn, "cancelled", text);
      announce(text);
    } else {
      const why = error && error.message ? `: ${error.message}` : ".";
      setTurnStatus(turn, "failed", `The run failed${why}`);
      announce(`The run failed${why}`);
    }
    finishActive(turn);
    onEnded(turn);
    onTurn(turn);
  }

  function failTurn(turn, message) {
    turn.ended = true;
    for (const section of turn.sections.values()) {
      if (section.state !== "done" && section.state !== "failed") {
        finishText(section);
        setSectionState(section, "stopped");
      }
    }
    setTurnStatus(turn, "failed", message);
    announce(message);
    finishActive(turn);
    onEnded(turn);
    onTurn(turn);
  }

  function finishActive(turn) {
    if (active === turn) {
      active = null;
      onBusy(false);
    }
  }

  // ---------------------------------------------------------------- starting, stopping, resuming

  function sendStart(turn) {
    const frame = { type: "run.start", pipeline: turn.pipeline, input: turn.input, ref: turn.ref };
    if (turn.conversation) frame.conversation = turn.conversation;
    if (turn.replaces) frame.replaces = turn.replaces;
    else if (turn.after) frame.after = turn.after;
    if (send(frame)) {
      turn.startSent = true;
      setTurnStatus(turn, "sending", "Waiting for the server…");
    } else {
      setTurnStatus(turn, "sending", "Offline; the message will be sent when the connection is back.");
    }
  }

  function resume(turn, force) {
    const now = performance.now();
    if (!force && now - turn.resumeAskedAt < 2000) return;
    if (send({ type: "run.resume", run_id: turn.runId, after_seq: turn.lastSeq, ref: turn.ref })) {
      turn.resumeAskedAt = now;
    }
  }

  /** Start a run for a new turn at the end of the list (`extra`: conversation, replaces, after, versions). */
  function start(pipeline, input, extra = {}) {
    const turn = newTurn(pipeline, input, extra);
    active = turn;
    onBusy(true);
    onTurn(turn);
    scrollToBottom();
    sendStart(turn);
    return turn;
  }

  function stop() {
    const turn = active;
    if (!turn || turn.stopRequested) return false;
    turn.stopRequested = true;
    if (!turn.runId && !turn.startSent) {
      // Never reached the server: nothing to cancel there.
      turns.delete(turn.ref);
      endTurn(turn, "cancelled");
      return true;
    }
    setTurnStatus(turn, "stopping", "Stopping…");
    if (turn.runId) send({ type: "run.cancel", run_id: turn.runId, ref: turn.ref });
    // Otherwise run.accepted sends the cancel as soon as the run has an id.
    confirmStop(turn);
    return true;
  }

  // A run whose host is gone never confirms a cancel: after a while, stop waiting for it.
  const STOP_CONFIRM_MS = 10000;
  function confirmStop(turn) {
    setTimeout(() => {
      if (turn.ended) return;
      if (!send({ type: "ping" })) {
        confirmStop(turn); // offline: the cancel goes out on reconnect; keep waiting
        return;
      }
      endTurn(turn, "cancelled");
      setTurnStatus(turn, "cancelled", "Stopped. The server did not confirm the cancel.");
    }, STOP_CONFIRM_MS);
  }

  /** The socket is open (again): resume every run in flight, send what waited for it. */
  function opened() {
    for (const turn of turns.values()) {
      if (turn.ended) continue;
      if (turn.runId) {
        // Continue where we were: the server re-sends everything after the last seq we saw.
        resume(turn, true);
        if (turn.stopRequested) send({ type: "run.cancel", run_id: turn.runId, ref: turn.ref });
      } else if (turn.startSent) {
        // The server may have started the run, but we never learnt its id: it cannot be resumed.
        failTurn(turn, "The connection dropped before the server accepted this message. Please send it again.");
      } else {
        sendStart(turn);
      }
    }
  }

  function dropped() {
    if (active) active.dropped = true;
  }

  // ---------------------------------------------------------------- restoring and clearing

  /** Draw a turn of GET /api/conversations/<id> as the live page showed it; a run still in flight
   * is resumed from its start (now when the socket is open, else when it opens). */
  function restoreTurn(t, conversation) {
    const turn = newTurn(t.pipeline, t.input);
    const tasks = Array.isArray(t.tasks) ? t.tasks : [];
    const versions = Array.isArray(t.versions) && t.versions.length ? t.versions : [t.run_id];
    Object.assign(turn, { conversation, runId: t.run_id, startSent: true, restored: true, versions });
    byRun.set(t.run_id, turn);
    buildSections(turn, tasks);
    if (t.status === "running") {
      // Its page is gone: a cancel the server sends now is that page's close (dropped).
      turn.dropped = true;
      setTurnStatus(turn, "running", "");
      active = turn;
      onBusy(true);
      resume(turn, true);
      onTurn(turn);
      return turn;
    }
    turn.ended = true;
    for (const task of tasks) restoreSection(turn.sections.get(task.key), task);
    // As endTurn decides live: a failed run whose sections all ended by themselves is finished.
    const selfEnded = tasks.every((k) => k.status === "completed" || k.status === "failed");
    if (t.status === "cancelled") {
      setTurnStatus(turn, "cancelled", "Stopped. The run was cancelled.");
    } else if (t.status === "completed" || (t.status === "failed" && selfEnded && tasks.length)) {
      setTurnStatus(turn, ...finishedStatus(turn, ""));
    } else {
      setTurnStatus(turn, "failed", "The run failed.");
    }
    onTurn(turn);
    return turn;
  }

  function restoreSection(section, task) {
    if (!section) return;
    section.text = typeof task.text === "string" ? task.text : "";
    const error = task.error && typeof task.error === "object" ? task.error : {};
    if (task.status === "completed") {
      showCompleted(section, { finish_reason: task.finish_reason });
    } else if (task.status === "failed" && error.code !== "cancelled") {
      showFailed(section, error);
    } else {
      finishText(section);
      setSectionState(section, "stopped");
    }
  }

  /** Forget `turn` and every turn after it (another version replaces them on screen). */
  function removeFrom(turn) {
    const all = [...turns.values()];
    for (const t of all.slice(all.indexOf(turn))) {
      turns.delete(t.ref);
      if (t.runId) byRun.delete(t.runId);
      for (const section of t.sections.values()) dirty.delete(section);
      t.el.remove();
      if (active === t) {
        active = null;
        onBusy(false);
      }
    }
  }

  /** Forget every turn. Runs left behind go on (and are recorded); coming back resumes one in flight. */
  function clear() {
    const first = turns.values().next().value;
    if (first) removeFrom(first);
    list.replaceChildren();
  }

  return {
    turns, handleFrame, start, stop, opened, dropped, restoreTurn, removeFrom, clear,
    get active() {
      return active;
    },
    /** The turns on screen, oldest first. */
    list: () => [...turns.values()],
  };
}
