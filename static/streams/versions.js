/* Versions of a turn (docs/protocol.md v3): Regenerate the last turn, Edit a message, and step
 * between versions ("‹ 2 / 2 ›"). Each version is a run; what followed it is its branch. */
import { autosize, enterSends } from "./composer.js";
import { el } from "./view.js";

function button(className, label, text) {
  const b = el("button", `btn-tool ${className}`, text);
  b.type = "button";
  if (label !== text) b.setAttribute("aria-label", label);
  return b;
}

/**
 * Controls for the turns of `view`. Callbacks:
 * - `onRegenerate(turn)`, `onEdit(turn, input)`: start a new version of the turn;
 * - `onSwitch(turn, runId)`: show the branch through that version;
 * - `busy()`: a run is in flight (no new version can start).
 */
export function createVersions({ view, onRegenerate, onEdit, onSwitch, busy }) {
  /** Draw every turn's controls again (the last turn and the busy state decide what shows). */
  function refresh() {
    const all = view.list();
    all.forEach((turn, i) => draw(turn, i === all.length - 1));
  }

  // Under the message: the switcher and Edit; at the end of the reply: Regenerate (last turn).
  function draw(turn, last) {
    if (turn.editing) return;
    const ready = turn.runId && turn.ended && !busy();
    const mine = [];
    const index = turn.versions.indexOf(turn.runId);
    if (turn.versions.length > 1 && index >= 0) {
      const prev = button("version-prev", "Previous version", "‹");
      const next = button("version-next", "Next version", "›");
      prev.disabled = index === 0 || !ready;
      next.disabled = index === turn.versions.length - 1 || !ready;
      prev.addEventListener("click", () => onSwitch(turn, turn.versions[index - 1]));
      next.addEventListener("click", () => onSwitch(turn, turn.versions[index + 1]));
      const where = el("span", "version-count", `${index + 1} / ${turn.versions.length}`);
      where.setAttribute("aria-label", `Version ${index + 1} of ${turn.versions.length}`);
      const group = el("div", "versions");
      group.setAttribute("role", "group");
      group.setAttribute("aria-label", "Versions");
      group.append(prev, where, next);
      mine.push(group);
    }
    if (ready) {
      const edit = button("edit", "Edit", "Edit");
      edit.addEventListener("click", () => openEditor(turn));
      mine.push(edit);
    }
    if (!turn.msgTools) {
      turn.msgTools = el("div", "msg-tools");
      turn.user.append(turn.msgTools);
    }
    turn.msgTools.replaceChildren(...mine);
    turn.msgTools.hidden = mine.length === 0;

    const tools = [];
    if (ready && last) {
      const regenerate = button("regenerate", "Regenerate", "Regenerate");
      regenerate.addEventListener("click", () => onRegenerate(turn));
      tools.push(regenerate);
    }
    turn.tools.replaceChildren(...tools);
    turn.tools.hidden = tools.length === 0;
  }

  // The message in a text area that takes the focus: Enter sends, Shift+Enter a new line, Esc cancels.
  function openEditor(turn) {
    turn.editing = true;
    const form = el("form", "editor");
    const area = el("textarea", "editor-text");
    area.value = turn.input;
    area.setAttribute("aria-label", "Edit message");
    area.rows = 1;
    const save = button("editor-send", "Send", "Send");
    save.type = "submit";
    const cancel = button("editor-cancel", "Cancel", "Cancel");
    const row = el("div", "editor-row");
    row.append(cancel, save);
    form.append(area, row);
    turn.userText.hidden = true;
    turn.msgTools.hidden = true;
    turn.user.insertBefore(form, turn.msgTools);

    const close = () => {
      form.remove();
      turn.userText.hidden = false;
      turn.editing = false;
      refresh();
    };
    const done = () => {
      const input = area.value;
      if (!input.trim() || busy()) return;
      close();
      onEdit(turn, input);
    };
    const cancelled = () => {
      close();
      const again = turn.user.querySelector(".edit");
      if (again) again.focus();
    };
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      done();
    });
    cancel.addEventListener("click", cancelled);
    enterSends(area, done, cancelled);
    area.addEventListener("input", () => autosize(area, 320));
    area.focus();
    area.setSelectionRange(area.value.length, area.value.length);
    autosize(area, 320);
  }

  return { refresh };
}
