/* The message box: Enter sends, Shift+Enter starts a new line, Stop while a run is on. */

/** Enter calls `onSend`, Shift+Enter is a new line, Esc calls `onCancel` (when given). */
export function enterSends(textarea, onSend, onCancel) {
  textarea.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      onSend();
    } else if (event.key === "Escape" && onCancel) {
      event.preventDefault();
      event.stopPropagation(); // the page's Esc (stop a run, close the drawer) is not meant
      onCancel();
    }
  });
}

/** Grow a text area with its text, up to `max` pixels. */
export function autosize(textarea, max = 240) {
  textarea.style.height = "auto";
  textarea.style.height = `${Math.min(textarea.scrollHeight, max)}px`;
}

/** Code points, as the server counts them (an emoji is one character, not two). */
export const charCount = (text) => [...text].length;

/**
 * Wire the composer. `onSubmit(pipeline, input)` returns true when it took the message;
 * `onStop()` returns true when a stop was requested.
 */
export function createComposer({ form, prompt, pipeline, send, stop, maxInputChars, announce, onSubmit, onStop }) {
  function submit() {
    const input = prompt.value;
    if (form.dataset.busy === "true" || !input.trim()) return;
    if (!pipeline.value) {
      announce("No pipeline is configured.");
      return;
    }
    if (charCount(input) > maxInputChars) {
      announce(`The message is longer than ${maxInputChars} characters.`);
      prompt.setAttribute("aria-invalid", "true");
      return;
    }
    prompt.removeAttribute("aria-invalid");
    if (!onSubmit(pipeline.value, input)) return;
    prompt.value = "";
    autosize(prompt);
  }

  function requestStop() {
    if (!onStop()) return;
    // aria-disabled, not disabled: a disabled button would drop the keyboard focus to <body>.
    stop.setAttribute("aria-disabled", "true");
    stop.textContent = "Stopping…";
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    submit();
  });
  enterSends(prompt, submit);
  prompt.addEventListener("input", () => autosize(prompt));
  stop.addEventListener("click", requestStop);

  const saved = localStorage.getItem("streams.pipeline");
  if (saved && [...pipeline.options].some((o) => o.value === saved)) pipeline.value = saved;
  pipeline.addEventListener("change", () => localStorage.setItem("streams.pipeline", pipeline.value));

  return {
    stop: requestStop,
    setBusy(busy) {
      const stopHadFocus = document.activeElement === stop;
      send.hidden = busy;
      stop.hidden = !busy;
      stop.removeAttribute("aria-disabled");
      stop.textContent = "Stop";
      form.dataset.busy = busy ? "true" : "false";
      // The Stop button disappears under the keyboard user: keep focus in the conversation flow.
      if (!busy && stopHadFocus) prompt.focus();
    },
    /** Put text back in an empty box (a message that never reached the server). */
    giveBack(text) {
      if (prompt.value) return;
      prompt.value = text;
      autosize(prompt);
    },
    /** Select `slug` in the picker when it is offered. */
    pick(slug) {
      if ([...pipeline.options].some((o) => o.value === slug)) pipeline.value = slug;
    },
  };
}
