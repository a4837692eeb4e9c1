/* Following a stream: stay at the bottom while the reader is there; a "Jump to latest" button
 * while they have scrolled up during a stream. */

const NEAR_PX = 120;
const page = () => document.scrollingElement || document.documentElement;

export function nearBottom() {
  const doc = page();
  return doc.scrollHeight - doc.scrollTop - doc.clientHeight < NEAR_PX;
}

export function scrollToBottom() {
  const doc = page();
  doc.scrollTop = doc.scrollHeight;
}

/** Show `button` while `streaming()` and the reader is away from the bottom; a click goes down
 * and gives the focus to `focusAfter` (the button disappears under it). Returns `update`. */
export function jumpToLatest(button, streaming, focusAfter) {
  let queued = false;
  function update() {
    queued = false;
    const show = streaming() && !nearBottom();
    if (button.hidden === show) button.hidden = !show;
  }
  const later = () => {
    if (!queued) {
      queued = true;
      requestAnimationFrame(update);
    }
  };
  window.addEventListener("scroll", later, { passive: true });
  window.addEventListener("resize", later, { passive: true });
  button.addEventListener("click", () => {
    scrollToBottom();
    button.hidden = true;
    if (focusAfter) focusAfter.focus({ preventScroll: true });
  });
  return later;
}
