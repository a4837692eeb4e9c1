"""How pieces and frames are stored: compact JSON of integers, decoded to the contract's shape.

Stored (TaskRun.pieces, RunTrace.frames) as columns of integers rather than one JSON object or
pair per token, which costs the writer several times less CPU and the database half the space:

- pieces: {"us": [...], "len": [...]}: each piece's receive time in microseconds after the run's
  stored start, and its length in TaskRun.text (the pieces joined are the text). Should a caller
  have given a text that is not the pieces joined, "text" holds the pieces' texts instead.
- frames: {"keys": [...], "types": [...], "seq": [...], "type": [...], "task": [...], "us": [...]}:
  per frame its seq, an index into `types`, an index into `keys` (-1: none) and its send time.

Decoded: pieces [[received_at, text], ...] and frames [{seq, type, task, sent_at}], times in epoch
seconds. A time is rounded down to its microsecond, so the order of times is kept.
"""

__all__ = ["as_stored", "decode_frames", "decode_pieces", "encode_frames", "encode_pieces"]


def _us(times, t0: float) -> list[int]:
    """Microseconds after t0, rounded down."""
    return [int((t - t0) * 1e6) for t in times]


def as_stored(t: float, t0: float) -> float:
    """The time `t` as it decodes from the stored form (the same float, to the bit)."""
    return t0 + int((t - t0) * 1e6) / 1e6


def encode_pieces(times: list[float], texts: list[str], text: str, t0: float) -> dict | list:
    """The stored form of a task's pieces ([] when there are none)."""
    if not times:
        return []
    out: dict = {"us": _us(times, t0)}
    if "".join(texts) == text:
        out["len"] = [len(x) for x in texts]
    else:
        out["text"] = list(texts)
    return out


def decode_pieces(stored, text: str, t0: float) -> list[list]:
    """[[received_at, text], ...] from the stored form."""
    if not stored:
        return []
    times = [t0 + us / 1e6 for us in stored["us"]]
    if "text" in stored:
        return [[at, x] for at, x in zip(times, stored["text"], strict=True)]
    out, start = [], 0
    for at, n in zip(times, stored["len"], strict=True):
        out.append([at, text[start : start + n]])
        start += n
    return out


def encode_frames(frames: list[tuple], t0: float) -> dict | list:
    """The stored form of a run's (seq, type, task, sent_at) frames."""
    if not frames:
        return []
    keys: dict[str, int] = {}
    types: dict[str, int] = {}
    out = {"seq": [], "type": [], "task": []}
    for seq, kind, task, _ in frames:
        out["seq"].append(seq)
        out["type"].append(types.setdefault(kind, len(types)))
        out["task"].append(-1 if task is None else keys.setdefault(task, len(keys)))
    out["us"] = _us((f[3] for f in frames), t0)
    return {"keys": list(keys), "types": list(types), **out}


def decode_frames(stored, t0: float) -> list[dict]:
    """[{seq, type, task, sent_at}] from the stored form."""
    if not stored:
        return []
    keys, types = stored["keys"], stored["types"]
    return [
        {"seq": seq, "type": types[kind], "task": keys[task] if task >= 0 else None, "sent_at": t0 + us / 1e6}
        for seq, kind, task, us in zip(
            stored["seq"], stored["type"], stored["task"], stored["us"], strict=True
        )
    ]
