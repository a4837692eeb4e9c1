/* Chat page: speaks the /ws/streams/ protocol (see docs/protocol.md) and renders untrusted model
 * output as sanitised Markdown. No build step: plain ES2020 in one IIFE. */
(() => {
  "use strict";

  const config = JSON.parse(document.getElementById("chat-config").textContent);
  const $ = (id) => document.getElementById(id);
  const ui = {
    conversation: $("conversation"),
    empty: $("empty"),
    form: $("composer"),
    prompt: $("prompt"),
    pipeline: $("pipeline"),
    send: $("send"),
    stop: $("stop"),
    conn: $("conn"),
    connText: $("conn-text"),
    announcer: $("announcer"),
    notice: $("notice"),
    loading: $("loading"),
  };

  // ---------------------------------------------------------------- safe Markdown

  const md = window.markdownit({ html: false, linkify: true, typographer: false });
  // Images in model output would fetch any URL the model names: a tracking and data
  // exfiltration channel (prompt injection). Image syntax stays visible as text instead.
  md.disable(["image"]);

  // Model output is untrusted: markdown-it escapes raw HTML and refuses javascript:/data:
  // links; DOMPurify then keeps only these tags and attributes, in case either misses something.
  const PURIFY = {
    ALLOWED_TAGS: [
      "a", "p", "br", "hr", "strong", "em", "del", "s", "code", "pre", "blockquote",
      "ul", "ol", "li", "h1", "h2", "h3", "h4", "h5", "h6",
      "table", "thead", "tbody", "tr", "th", "td",
    ],
    ALLOWED_ATTR: ["href", "title", "start", "class", "target", "rel"],
    ALLOWED_URI_REGEXP: /^(?:https?:|mailto:|#)/i,
    ALLOW_DATA_ATTR: false,
  };
  window.DOMPurify.addHook("uponSanitizeAttribute", (node, data) => {
    // The only class markdown-it writes is a fenced block's language; nothing may borrow the page's.
    if (data.attrName === "class" && !/^language-[\w+#.-]+$/.test(data.attrValue)) {
      data.keepAttr = false;
    }
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

  function renderMarkdown(text) {
    return window.DOMPurify.sanitize(md.render(text), PURIFY);
  }

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
    for (const section of dirty) renderSection(section);
    dirty.clear();
    if (stick) scrollToBottom();
  }
  function renderSection(section) {
    if (section.rendered === section.text) return;
    section.body.innerHTML = renderMarkdown(section.text);
    section.rendered = section.text;
  }

  // ---------------------------------------------------------------- announcements

  function announce(message) {
    const p = document.createElement("p");
    p.textContent = message;
    ui.announcer.append(p);
    // Old messages are already spoken; keep the region small.
    while (ui.announcer.childElementCount > 6) ui.announcer.firstElementChild.remove();
  }

  function summary(text, limit = 600) {
    const plain = text.replace(/\s+/g, " ").trim();
    return plain.length > limit ? plain.slice(0, limit) + "…" : plain;
  }

  // ---------------------------------------------------------------- scrolling

  function nearBottom() {
    const doc = document.scrollingElement || document.documentElement;
    return doc.scrollHeight - doc.scrollTop - doc.clientHeight < 120;
  }
  function scrollToBottom() {
    const doc = document.scrollingElement || document.documentElement;
    doc.scrollTop = doc.scrollHeight;
  }

  // ---------------------------------------------------------------- conversation model

  const turns = new Map(); // ref -> turn
  const byRun = new Map(); // run_id -> turn
  let counter = 0;
  let active = null; // the turn whose run is in flight (one at a time)

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function newTurn(pipeline, input) {
    counter += 1;
    const ref = `t${counter}-${Math.random().toString(36).slice(2, 10)}`;
    const li = el("li", "turn");
    li.dataset.ref = ref;
    const user = el("div", "msg-user");
    user.append(el("p", "who visually-hidden", "You"), el("p", "user-text", input));
    const reply = el("div", "reply");
    reply.setAttribute("aria-label", "Reply");
    const status = el("p", "turn-status");
    status.dataset.state = "sending";
    status.textContent = "Sending…";
    reply.append(status);
    li.append(user, reply);
    ui.conversation.append(li);
    ui.empty.hidden = true;
    const turn = {
      ref, pipeline, input, el: li, reply, status,
      runId: null, lastSeq: 0, sections: new Map(), order: [],
      startSent: false, ended: false, stopRequested: false, dropped: false,
      resumeAskedAt: 0, startedAt: performance.now(),
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
      const meta = el("p", "task-meta");
      meta.hidden = true;
      section.append(head, bg, body, note, error, meta);
      turn.reply.insertBefore(section, turn.status);
      const entry = {
        key: task.key, title: task.title || task.key, el: section, badge, bg, bgText, body, note, error, meta,
        text: "", rendered: "", state: "pending",
      };
      turn.sections.set(task.key, entry);
      turn.order.push(task.key);
      if (index === 0) setSectionState(entry, "starting");
      else setSectionState(entry, "background", { state: "waiting", tokens: 0 });
    });
  }

  const BG_DETAIL = {
    waiting: () => "Waiting for its inputs",
    running: (n) => `${n} token${n === 1 ? "" : "s"} so far`,
    done: (n) => `Finished with ${n} token${n === 1 ? "" : "s"}; shown after the sections above`,
    failed: () => "Failed; details follow after the sections above",
  };

  function setSectionState(section, state, progress) {
    section.state = state;
    section.el.dataset.state = state;
    section.el.setAttribute("aria-busy", state === "live" || state === "starting" ? "true" : "false");
    const labels = {
      starting: "Starting…",
      background: "Running in the background",
      live: "Streaming",
      done: "Done",
      failed: "Failed",
      stopped: "Stopped",
    };
    section.badge.textContent = labels[state] || state;
    section.bg.hidden = state !== "background" && state !== "starting";
    if (state === "background") {
      const p = progress || { state: "waiting", tokens: 0 };
      section.el.dataset.progress = p.state;
      section.bgText.textContent = (BG_DETAIL[p.state] || BG_DETAIL.running)(p.tokens || 0);
    } else if (state === "starting") {
      section.bgText.textContent = "Waiting for the first token";
    }
  }

  // ---------------------------------------------------------------- socket

  let ws = null;
  let attempt = 0;
  let reconnectTimer = null;
  let holdUntil = 0; // test hook: stay offline until then
  let lastHeard = 0;
  let everOpened = false;
  let opens = 0; // sockets opened so far (the test hook reports it)
  const PING_EVERY_MS = 20000;
  const DEAD_AFTER_MS = 45000;

  function socketUrl() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return `${scheme}//${location.host}/ws/streams/`;
  }

  function setConn(state, text) {
    ui.conn.dataset.state = state;
    ui.connText.textContent = text;
  }

  function connect() {
    clearTimeout(reconnectTimer);
    reconnectTimer = null;
    if (ws && (ws.readyState === WebSocket.OPEN || ws.readyState === WebSocket.CONNECTING)) return;
    const wait = holdUntil - Date.now();
    if (wait > 0) {
      reconnectTimer = setTimeout(connect, wait);
      return;
    }
    setConn("connecting", attempt ? "Reconnecting…" : "Connecting…");
    const socket = new WebSocket(socketUrl());
    ws = socket;
    let opened = false;
    socket.onopen = () => {
      opened = true;
      opens += 1;
      attempt = 0;
      lastHeard = Date.now();
      const wasDown = everOpened;
      everOpened = true;
      setConn("open", "Connected");
      if (wasDown && active) announce("Reconnected.");
      onOpen();
    };
    socket.onmessage = (event) => {
      if (socket !== ws) return;
      lastHeard = Date.now();
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      if (frame && typeof frame === "object") onFrame(frame);
    };
    socket.onclose = (event) => {
      if (socket !== ws) return;
      ws = null;
      if (event.code === 4401) {
        location.assign(loginUrl());
        return;
      }
      if (active) active.dropped = true;
      if (opened && active) announce("Connection lost. Reconnecting…");
      scheduleReconnect(opened);
    };
  }

  function loginUrl() {
    return `${config.loginUrl}?next=${encodeURIComponent(location.pathname + location.search)}`;
  }

  function scheduleReconnect(opened) {
    attempt += 1;
    // Exponential backoff with jitter (0.5 s doubling up to 15 s), so a restarted server is
    // not hit by every tab at once.
    const base = Math.min(15000, 500 * 2 ** Math.min(attempt - 1, 5));
    const delay = Math.max(holdUntil - Date.now(), base / 2 + Math.random() * (base / 2));
    setConn("down", `Offline · retrying in ${Math.ceil(delay / 1000)} s`);
    reconnectTimer = setTimeout(connect, delay);
    if (!opened && attempt >= 2) checkSignedIn();
  }

  // A handshake refused because the login expired looks like any failed connection; the page
  // itself answers with a redirect to the login page in that case.
  let checking = false;
  async function checkSignedIn() {
    if (checking) return;
    checking = true;
    try {
      const response = await fetch(location.pathname, { credentials: "same-origin", cache: "no-store" });
      if (response.redirected && new URL(response.url).pathname === config.loginUrl) {
        location.assign(loginUrl());
      }
    } catch {
      // Offline: the next attempt will tell.
    } finally {
      checking = false;
    }
  }

  function sendFrame(frame) {
    if (!ws || ws.readyState !== WebSocket.OPEN) return false;
    ws.send(JSON.stringify(frame));
    return true;
  }

  function onOpen() {
    for (const turn of turns.values()) {
      if (turn.ended) continue;
      if (turn.runId) {
        // Continue where we were: the server re-sends everything after the last seq we saw.
        resume(turn, true);
        if (turn.stopRequested) sendFrame({ type: "run.cancel", run_id: turn.runId, ref: turn.ref });
      } else if (turn.startSent) {
        // The server may have started the run, but we never learnt its id: it cannot be resumed.
        failTurn(turn, "The connection dropped before the server accepted this message. Please send it again.");
      } else {
        sendStart(turn);
      }
    }
  }

  function resume(turn, force) {
    const now = performance.now();
    if (!force && now - turn.resumeAskedAt < 2000) return;
    if (sendFrame({ type: "run.resume", run_id: turn.runId, after_seq: turn.lastSeq, ref: turn.ref })) {
      turn.resumeAskedAt = now;
    }
  }

  setInterval(() => {
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    // A socket that went silent (sleeping laptop, dead NAT entry) never fires onclose by itself.
    if (Date.now() - lastHeard > DEAD_AFTER_MS) {
      ws.close();
      return;
    }
    sendFrame({ type: "ping" });
  }, PING_EVERY_MS);

  window.addEventListener("online", () => {
    if (!ws) {
      attempt = 0;
      connect();
    }
  });

  // ---------------------------------------------------------------- frames

  function onFrame(frame) {
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
    byRun.set(frame.run_id, turn);
    buildSections(turn, frame.tasks || []);
    setTurnStatus(turn, "running", "");
    if (typeof frame.conversation === "string" && frame.conversation) joined(turn, frame.conversation);
    if (turn.stopRequested) sendFrame({ type: "run.cancel", run_id: turn.runId, ref: turn.ref });
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
      failTurn(turn, frame.code === "unknown_conversation" ? gone : frame.message || "The message was refused.");
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
    renderSection(section);
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

  function completeSection(section, stats) {
    const cut = showCompleted(section, stats);
    announce(`${section.title}${cut ? " (cut off: length limit)" : ""}: ${summary(section.text) || "no text"}`);
  }

  function showFailed(section, error) {
    renderSection(section);
    setSectionState(section, "failed");
    section.error.textContent = error.message ? `${error.message} (${error.code || "error"})` : "This section failed.";
    section.error.hidden = false;
  }

  function failSection(section, error) {
    renderSection(section);
    if (error.code === "cancelled") {
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
      renderSection(section);
      if (section.state === "background" || section.state === "starting" || section.state === "live") {
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
    sidebar.refresh();
  }

  function failTurn(turn, message) {
    turn.ended = true;
    for (const section of turn.sections.values()) {
      if (section.state !== "done" && section.state !== "failed") setSectionState(section, "stopped");
    }
    setTurnStatus(turn, "failed", message);
    announce(message);
    if (!turn.runId && !ui.prompt.value) {
      ui.prompt.value = turn.input; // nothing was answered: give the text back to resend
      autosize();
    }
    finishActive(turn);
    if (turn.runId) sidebar.refresh();
  }

  // ---------------------------------------------------------------- composer

  function setBusy(busy) {
    const stopHadFocus = document.activeElement === ui.stop;
    ui.send.hidden = busy;
    ui.stop.hidden = !busy;
    ui.stop.removeAttribute("aria-disabled");
    ui.stop.textContent = "Stop";
    ui.form.dataset.busy = busy ? "true" : "false";
    // The Stop button disappears under the keyboard user: keep focus in the conversation flow.
    if (!busy && stopHadFocus) ui.prompt.focus();
  }

  function finishActive(turn) {
    if (active === turn) {
      active = null;
      setBusy(false);
    }
  }

  function sendStart(turn) {
    const frame = { type: "run.start", pipeline: turn.pipeline, input: turn.input, ref: turn.ref };
    if (turn.conversation) frame.conversation = turn.conversation;
    if (sendFrame(frame)) {
      turn.startSent = true;
      setTurnStatus(turn, "sending", "Waiting for the server…");
    } else {
      setTurnStatus(turn, "sending", "Offline; the message will be sent when the connection is back.");
    }
  }

  function submit() {
    const input = ui.prompt.value;
    if (active || !input.trim()) return;
    const pipeline = ui.pipeline.value;
    if (!pipeline) {
      announce("No pipeline is configured.");
      return;
    }
    // Code points, as the server counts them (an emoji is one character, not two).
    if ([...input].length > config.maxInputChars) {
      announce(`The message is longer than ${config.maxInputChars} characters.`);
      ui.prompt.setAttribute("aria-invalid", "true");
      return;
    }
    ui.prompt.removeAttribute("aria-invalid");
    ui.prompt.value = "";
    autosize();
    const turn = newTurn(pipeline, input);
    turn.conversation = conversationId;
    active = turn;
    setBusy(true);
    scrollToBottom();
    sendStart(turn);
  }

  function stop() {
    const turn = active;
    if (!turn || turn.stopRequested) return;
    turn.stopRequested = true;
    // aria-disabled, not disabled: a disabled button would drop the keyboard focus to <body>.
    ui.stop.setAttribute("aria-disabled", "true");
    ui.stop.textContent = "Stopping…";
    if (!turn.runId && !turn.startSent) {
      // Never reached the server: nothing to cancel there.
      turns.delete(turn.ref);
      endTurn(turn, "cancelled");
      return;
    }
    setTurnStatus(turn, "stopping", "Stopping…");
    if (turn.runId) sendFrame({ type: "run.cancel", run_id: turn.runId, ref: turn.ref });
    // Otherwise run.accepted sends the cancel as soon as the run has an id.
    confirmStop(turn);
  }

  // A run whose host is gone never confirms a cancel: after a while, stop waiting for it.
  const STOP_CONFIRM_MS = 10000;
  function confirmStop(turn) {
    setTimeout(() => {
      if (turn.ended) return;
      if (!ws || ws.readyState !== WebSocket.OPEN) {
        confirmStop(turn); // offline: the cancel goes out on reconnect; keep waiting
        return;
      }
      endTurn(turn, "cancelled");
      setTurnStatus(turn, "cancelled", "Stopped. The server did not confirm the cancel.");
    }, STOP_CONFIRM_MS);
  }

  function autosize() {
    ui.prompt.style.height = "auto";
    ui.prompt.style.height = `${Math.min(ui.prompt.scrollHeight, 240)}px`;
  }

  ui.form.addEventListener("submit", (event) => {
    event.preventDefault();
    submit();
  });
  ui.prompt.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      submit();
    }
  });
  document.addEventListener("keydown", (event) => {
    if (event.key !== "Escape") return;
    if (sidebar.isOpen()) {
      event.preventDefault();
      sidebar.close();
    } else if (active) {
      event.preventDefault();
      stop();
    }
  });
  ui.prompt.addEventListener("input", autosize);
  ui.stop.addEventListener("click", stop);

  const saved = localStorage.getItem("streams.pipeline");
  if (saved && [...ui.pipeline.options].some((o) => o.value === saved)) ui.pipeline.value = saved;
  ui.pipeline.addEventListener("change", () => localStorage.setItem("streams.pipeline", ui.pipeline.value));

  // ---------------------------------------------------------------- conversations

  // The conversation on screen, kept in the URL (?c=<id>) so that a reload restores it; null
  // for a new chat until its first run.accepted names it.
  let conversationId = null;
  let view = 0; // bumped on every switch: a load for an earlier view is dropped
  let loadFailed = false;

  const sidebar = window.streamsSidebar({
    listUrl: config.conversationsUrl,
    onSelect(id) {
      if (id !== conversationId || loadFailed) openConversation(id, true);
      ui.prompt.focus(); // next comes the message (and a closed drawer keeps no focus)
    },
    onNew: () => newChat(true),
  });

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
  function joined(turn, id) {
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
    view += 1;
    // Runs of the conversation left behind go on (and are recorded); the page stops showing
    // them, and coming back resumes one still in flight.
    turns.clear();
    byRun.clear();
    dirty.clear();
    ui.conversation.replaceChildren();
    ui.empty.hidden = false;
    ui.notice.hidden = true;
    ui.loading.hidden = true;
    loadFailed = false;
    if (active) {
      active = null;
      setBusy(false);
    }
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

  async function fetchConversation(id) {
    const url = `${config.conversationsUrl}/${encodeURIComponent(id)}`;
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

  async function openConversation(id, push) {
    clearView();
    const mine = view;
    conversationId = id;
    setUrl(id, push);
    sidebar.setCurrent(id);
    ui.empty.hidden = true;
    ui.loading.hidden = false;
    ui.conversation.setAttribute("aria-busy", "true");
    let detail = null;
    let failure = null;
    try {
      detail = await fetchConversation(id);
    } catch (error) {
      failure = error;
    }
    if (mine !== view) return;
    ui.loading.hidden = true;
    ui.conversation.removeAttribute("aria-busy");
    if (detail) {
      restore(detail);
    } else if (failure && failure.status === 404) {
      newChat(false);
      showNotice("That chat does not exist (or belongs to someone else). This is a new chat.");
    } else {
      loadFailed = true;
      ui.empty.hidden = true;
      showNotice("This chat could not be loaded. Select it again or reload the page to retry.");
    }
  }

  // Every turn as the live page showed it; a run still in flight is resumed from its start.
  function restore(detail) {
    const list = Array.isArray(detail.turns) ? detail.turns : [];
    let running = null;
    for (const t of list) {
      const turn = newTurn(t.pipeline, t.input);
      const tasks = Array.isArray(t.tasks) ? t.tasks : [];
      Object.assign(turn, { conversation: detail.id, runId: t.run_id, startSent: true, restored: true });
      byRun.set(t.run_id, turn);
      buildSections(turn, tasks);
      if (t.status === "running") {
        // Replayed from seq 0 by the resume (onOpen, or below when the socket is open already).
        // Its page is gone: a cancel the server sends now is that page's close (dropped).
        turn.dropped = true;
        setTurnStatus(turn, "running", "");
        running = turn;
        continue;
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
    }
    ui.empty.hidden = list.length > 0;
    const last = list[list.length - 1];
    if (last && [...ui.pipeline.options].some((o) => o.value === last.pipeline)) ui.pipeline.value = last.pipeline;
    for (const turn of turns.values()) {
      if (!turn.ended && ws && ws.readyState === WebSocket.OPEN) resume(turn, true);
    }
    if (running) {
      active = running;
      setBusy(true);
    }
    scrollToBottom();
    announce(`Chat loaded: ${list.length} message${list.length === 1 ? "" : "s"}.`);
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
      renderSection(section);
      setSectionState(section, "stopped");
    }
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
    drop(holdMs = 0) {
      holdUntil = Date.now() + holdMs;
      if (ws) ws.close(4000, "dropped by test hook");
    },
    resume(afterSeq) {
      if (active && active.runId) {
        sendFrame({ type: "run.resume", run_id: active.runId, after_seq: afterSeq, ref: active.ref });
      }
    },
    get connected() {
      return Boolean(ws && ws.readyState === WebSocket.OPEN);
    },
    get opens() {
      return opens;
    },
    get lastSeq() {
      return active ? active.lastSeq : null;
    },
    get conversation() {
      return conversationId;
    },
  };

  const initial = conversationFromUrl();
  if (initial) openConversation(initial, false);
  sidebar.refresh();
  connect();
})();
