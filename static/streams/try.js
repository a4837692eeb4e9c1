/* The admin's "Try it" panel on a pipeline's change page: run the saved pipeline on an input
 * typed there and stream the result with the chat page's view (sections, progress, Markdown). */
import { autosize, enterSends } from "./composer.js";
import { connect } from "./connection.js";
import { createView } from "./view.js";

const panel = document.getElementById("try-it");
const $ = (id) => document.getElementById(id);
const input = $("try-input");
const runButton = $("try-run");
const stopButton = $("try-stop");
const announcer = $("try-announcer");
let socket = null;
let view = null;

function announce(message) {
  const p = document.createElement("p");
  p.textContent = message;
  announcer.replaceChildren(p);
}

// The socket opens with the panel, not with every visit of the change page.
function start() {
  view = createView({
    list: $("try-output"),
    send: (frame) => socket.send(frame),
    announce,
    onBusy(busy) {
      runButton.hidden = busy;
      stopButton.hidden = !busy;
      if (!busy && document.activeElement === stopButton) input.focus();
    },
    onJoined() {},
    onEnded() {},
    onTurn() {},
  });
  socket = connect({
    loginUrl: panel.dataset.loginUrl,
    onFrame: (frame) => view.handleFrame(frame),
    onOpen: () => view.opened(),
    onDrop: () => view.dropped(),
    onState: (state, text) => {
      $("try-conn").dataset.state = state;
      $("try-conn").textContent = text;
    },
  });
}

function run() {
  const text = input.value;
  if (!text.trim() || !view || view.active) return;
  view.clear(); // one try at a time, each a new conversation
  view.start(panel.dataset.pipeline, text);
}

panel.addEventListener("toggle", () => {
  if (!panel.open) return;
  if (!socket) start();
  input.focus();
});
enterSends(input, run);
input.addEventListener("input", () => autosize(input));
runButton.addEventListener("click", run);
stopButton.addEventListener("click", () => view && view.stop());
