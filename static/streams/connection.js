/* The /ws/streams/ socket (docs/protocol.md): connect, reconnect with backoff, keep alive, and
 * hand every JSON frame on. What the frames mean is the view's business. */

const PING_EVERY_MS = 20000;
const DEAD_AFTER_MS = 45000;

function socketUrl() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/ws/streams/`;
}

/**
 * Open the socket and keep it open.
 * - `onFrame(frame)`: every frame that is a JSON object;
 * - `onOpen(reopened)`: the socket is open (`reopened`: it had been open before);
 * - `onDrop(wasOpen)`: the socket closed and a reconnect is scheduled;
 * - `onState(state, text)`: "connecting" / "open" / "down", with words for the user;
 * - `loginUrl`: where to go when the server says the login is gone (close 4401).
 */
export function connect({ onFrame, onOpen, onDrop, onState, loginUrl }) {
  let ws = null;
  let attempt = 0;
  let reconnectTimer = null;
  let holdUntil = 0; // test hook: stay offline until then
  let lastHeard = 0;
  let everOpened = false;
  let opens = 0;

  const toLogin = () => `${loginUrl}?next=${encodeURIComponent(location.pathname + location.search)}`;

  function open() {
    clearTimeout(reconnectTimer);
    reconnectTimer = null;
    if (ws && (ws.readyState === WebSocket.OPEN || ws.readyState === WebSocket.CONNECTING)) return;
    const wait = holdUntil - Date.now();
    if (wait > 0) {
      reconnectTimer = setTimeout(open, wait);
      return;
    }
    onState("connecting", attempt ? "Reconnecting…" : "Connecting…");
    const socket = new WebSocket(socketUrl());
    ws = socket;
    let opened = false;
    socket.onopen = () => {
      opened = true;
      opens += 1;
      attempt = 0;
      lastHeard = Date.now();
      const reopened = everOpened;
      everOpened = true;
      onState("open", "Connected");
      onOpen(reopened);
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
        location.assign(toLogin());
        return;
      }
      onDrop(opened);
      scheduleReconnect(opened);
    };
  }

  function scheduleReconnect(opened) {
    attempt += 1;
    // Exponential backoff with jitter (0.5 s doubling up to 15 s), so a restarted server is
    // not hit by every tab at once.
    const base = Math.min(15000, 500 * 2 ** Math.min(attempt - 1, 5));
    const delay = Math.max(holdUntil - Date.now(), base / 2 + Math.random() * (base / 2));
    onState("down", `Offline · retrying in ${Math.ceil(delay / 1000)} s`);
    reconnectTimer = setTimeout(open, delay);
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
      if (response.redirected && new URL(response.url).pathname === loginUrl) location.assign(toLogin());
    } catch {
      // Offline: the next attempt will tell.
    } finally {
      checking = false;
    }
  }

  const isOpen = () => Boolean(ws && ws.readyState === WebSocket.OPEN);

  setInterval(() => {
    if (!isOpen()) return;
    // A socket that went silent (sleeping laptop, dead NAT entry) never fires onclose by itself.
    if (Date.now() - lastHeard > DEAD_AFTER_MS) {
      ws.close();
      return;
    }
    ws.send(JSON.stringify({ type: "ping" }));
  }, PING_EVERY_MS);

  window.addEventListener("online", () => {
    if (!ws) {
      attempt = 0;
      open();
    }
  });

  open();
  return {
    /** Send a frame; false when the socket is not open (nothing was sent). */
    send(frame) {
      if (!isOpen()) return false;
      ws.send(JSON.stringify(frame));
      return true;
    },
    get connected() {
      return isOpen();
    },
    get opens() {
      return opens;
    },
    /** Close the socket for real and stay offline for `holdMs` (test hook). */
    drop(holdMs = 0) {
      holdUntil = Date.now() + holdMs;
      if (ws) ws.close(4000, "dropped by test hook");
    },
  };
}
