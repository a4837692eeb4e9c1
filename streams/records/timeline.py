"""An inline SVG timeline of one run: per task when it ran, its first token, when its frames were sent."""

from html import escape

__all__ = ["timeline_svg"]

WIDTH = 860
LABEL_W = 150
ROW_H = 30
TOP = 10
AXIS_H = 28
COLOURS = {"completed": "#3a8f50", "failed": "#c0392b", "cancelled": "#d68910", "pending": "#95a5a6"}
DELIVERY = "#2e6bd6"


_STEPS = [m * 10**e for e in range(-3, 5) for m in (1, 2, 5)]


def _axis_step(span: float) -> float:
    """The smallest round step that gives at most 10 ticks over `span`."""
    return next((s for s in _STEPS if span / s <= 10), _STEPS[-1])


def timeline_svg(start: float, end: float, tasks: list[dict], frames: list[dict]) -> str:
    """The SVG markup (every text escaped).

    `tasks`: dicts with key, title, status, started_at, first_at, ended_at (epoch seconds or
    None), in delivery order; `frames`: the trace's {seq, type, task, sent_at}.
    """
    span = max(end - start, 1e-3)
    plot_w = WIDTH - LABEL_W - 20

    def x(t: float) -> float:
        return LABEL_W + max(0.0, min(1.0, (t - start) / span)) * plot_w

    height = TOP + ROW_H * len(tasks) + AXIS_H + 16
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12" role="img" '
        'aria-label="run timeline">'
    ]
    sent: dict[str, list[float]] = {}
    for frame in frames:
        if frame.get("task") is not None and frame.get("sent_at") is not None:
            sent.setdefault(frame["task"], []).append(frame["sent_at"])
    for row, task in enumerate(tasks):
        y = TOP + row * ROW_H
        key = escape(task["key"])
        label = escape(task.get("title") or task["key"])
        out.append(f'<rect x="{LABEL_W}" y="{y}" width="{plot_w}" height="{ROW_H - 4}" fill="#f4f6f7"/>')
        out.append(f'<text x="{LABEL_W - 8}" y="{y + ROW_H / 2}" text-anchor="end">{label}</text>')
        began, ended = task.get("started_at"), task.get("ended_at")
        if began is not None:
            x0, x1 = x(began), x(ended if ended is not None else end)
            colour = COLOURS.get(task.get("status"), COLOURS["pending"])
            status = escape(task.get("status") or "")
            out.append(
                f'<rect x="{x0:.1f}" y="{y + 3}" width="{max(x1 - x0, 2):.1f}" height="{ROW_H / 2 - 5}" '
                f'fill="{colour}"><title>{key}: ran {began - start:.3f}-'
                f"{(ended or end) - start:.3f} s ({status})</title></rect>"
            )
        if task.get("first_at") is not None:
            xf = x(task["first_at"])
            out.append(
                f'<line x1="{xf:.1f}" x2="{xf:.1f}" y1="{y}" y2="{y + ROW_H / 2}" stroke="#000" '
                f'stroke-width="2"><title>{key}: first token at {task["first_at"] - start:.3f} s'
                "</title></line>"
            )
        times = sent.get(task["key"], [])
        if times:
            y_d = y + ROW_H / 2 + 2
            x0, x1 = x(min(times)), x(max(times))
            out.append(
                f"<g><title>{key}: {len(times)} frames delivered {min(times) - start:.3f}-"
                f"{max(times) - start:.3f} s</title>"
                f'<line x1="{x0:.1f}" x2="{max(x1, x0 + 1):.1f}" y1="{y_d + 4}" y2="{y_d + 4}" '
                f'stroke="{DELIVERY}" stroke-opacity="0.4"/>'
            )
            # One mark per pixel, however many frames: the picture stays small.
            for px in sorted({round(x(t)) for t in times}):
                out.append(f'<line x1="{px}" x2="{px}" y1="{y_d}" y2="{y_d + 8}" stroke="{DELIVERY}"/>')
            out.append("</g>")
    axis_y = TOP + ROW_H * len(tasks) + 4
    out.append(f'<line x1="{LABEL_W}" x2="{LABEL_W + plot_w}" y1="{axis_y}" y2="{axis_y}" stroke="#555"/>')
    step = _axis_step(span)
    for i in range(int(span / step) + 1):
        xt = x(start + i * step)
        out.append(f'<line x1="{xt:.1f}" x2="{xt:.1f}" y1="{axis_y}" y2="{axis_y + 5}" stroke="#555"/>')
        out.append(f'<text x="{xt:.1f}" y="{axis_y + 18}" text-anchor="middle">{i * step:g} s</text>')
    out.append(
        f'<text x="{LABEL_W}" y="{axis_y + AXIS_H + 8}" fill="#555">'
        "bar: the task ran (colour: its status) · black: first token · blue: frames sent to the client</text>"
    )
    out.append("</svg>")
    return "".join(out)
