"""Conversations: who may continue one, and its earlier turns as history for prompts.

A conversation belongs to the owner of its runs (the owner strings of streams.access.owners.owner_of).
A missing id and another owner's id get the same answer, `unknown_conversation`, after the
same delay (so a stranger cannot even tell that an id exists).

Versions: a run may replace an earlier turn (regenerate, edit) or follow an older one, so a
conversation's runs form a tree (streams/records/branches.py); each run stores the run it
follows. A run named by `replaces` or `after` must be a run of the same conversation (so of
the same owner), else `unknown_run`.

History: the earlier turns of the new run's own branch, oldest first, each the turn's input
and the delivered text of its pipeline's first task. Runs still running and turns without an
answer (its first task failed before any text) are left out, so user and assistant messages
alternate as every chat API wants. Bounded by STREAMS["HISTORY_MAX_TURNS"] (the newest turns)
and STREAMS["HISTORY_MAX_CHARS"] (inputs plus answers; the newest turns that fit whole).
Runs of this event loop whose records are not written yet are included from memory; a turn
that ended on another instance counts once its records are written (within a fraction of a
second of its end).
"""

import asyncio
from dataclasses import dataclass
from functools import cached_property

from channels.db import database_sync_to_async
from django.conf import settings

from ..models import Conversation, Run, TaskRun, new_conversation_id
from ..protocol import UNAVAILABLE, UNKNOWN_CONVERSATION, UNKNOWN_RUN, ClientError
from .branches import Tree
from .store import records_db
from .writer import pending_recorders

__all__ = [
    "History",
    "Turn",
    "UnknownConversation",
    "UnknownRun",
    "conversation_detail",
    "load_history",
    "open_conversation",
    "start_turn",
]

# A conversation id not found for its owner is looked up once more after this long: it may be
# a new conversation whose first run another instance has not written yet.
RECHECK_S = 0.5
MAX_ID_CHARS = 64


class UnknownConversation(ClientError):
    """A conversation that does not exist or belongs to someone else."""

    def __init__(self, ref: str | None = None):
        super().__init__(UNKNOWN_CONVERSATION, "no such conversation", ref)


@dataclass(frozen=True)
class History:
    """Earlier turns of a conversation: (input, answer) pairs, oldest first."""

    turns: tuple[tuple[str, str], ...] = ()

    @cached_property
    def text(self) -> str:
        """The turns as plain text, for `{{ history }}`."""
        return "\n\n".join(f"User: {q}\nAssistant: {a}" for q, a in self.turns)

    @cached_property
    def messages(self) -> list[dict]:
        """The turns as chat messages, for a task set to receive them before its own prompt."""
        out = []
        for q, a in self.turns:
            out += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        return out


@dataclass(frozen=True)
class Turn:
    """A run's place in its conversation: the id (new or continued), the history before it,
    the run it follows ("" for a first turn) and the run it is a new version of (if any)."""

    conversation: str
    history: History
    parent: str = ""
    replaces: str | None = None


class UnknownRun(ClientError):
    """A run named by `replaces`, `after` or `?branch=` that is not one of the conversation's."""

    def __init__(self, run_id: str, ref: str | None = None):
        super().__init__(UNKNOWN_RUN, f"no run {run_id[:128]!r} in this conversation", ref)


def _owned(owner: str, conversation_id: str) -> bool:
    """Whether the conversation exists and is the owner's."""
    return Conversation.objects.using(records_db()).filter(pk=conversation_id, owner=owner).exists()


def _in_memory(owner: str, conversation_id: str) -> bool:
    """Whether a run of this loop, not written yet, has this owner and conversation."""
    return any(r.conversation == conversation_id and r.owner == owner for r in pending_recorders())


async def open_conversation(owner: str, conversation_id: str | None, ref: str | None = None) -> str:
    """A new conversation id, or `conversation_id` when it is the owner's; else UnknownConversation."""
    if conversation_id is None:
        return new_conversation_id()  # its row is written with its first run
    if not isinstance(conversation_id, str) or not 0 < len(conversation_id) <= MAX_ID_CHARS:
        raise UnknownConversation(ref)
    if _in_memory(owner, conversation_id):
        return conversation_id
    try:
        for attempt in range(2):
            if attempt:
                await asyncio.sleep(RECHECK_S)
            if await database_sync_to_async(_owned)(owner, conversation_id):
                return conversation_id
    except Exception as exc:  # the database is down: ownership cannot be checked, so no
        raise ClientError(UNAVAILABLE, "conversations are unavailable; try again", ref) from exc
    raise UnknownConversation(ref)


async def start_turn(
    owner: str,
    conversation_id: str | None,
    ref: str | None = None,
    *,
    replaces: str | None = None,
    after: str | None = None,
) -> Turn:
    """open_conversation, then where the new turn goes and the history of its branch.

    The new run follows the parent of `replaces` (a new version of that turn), else `after`,
    else the newest run of the conversation (the end of its current branch).
    """
    cid = await open_conversation(owner, conversation_id, ref)
    named = replaces or after
    if conversation_id is None:
        if named:  # a new conversation has no runs yet (inputs.py refuses this earlier)
            raise UnknownRun(named, ref)
        return Turn(cid, History())
    tree = await _tree_naming(cid, named, ref)
    if replaces:
        parent = tree.parent_of(replaces)
    elif after:
        parent = after
    else:
        parent = tree.newest() or ""
    return Turn(cid, await load_history(cid, parent, tree), parent, replaces)


async def _tree_naming(conversation_id: str, named: str | None, ref: str | None) -> Tree:
    """The conversation's tree, which must hold `named`: looked up once more after RECHECK_S,
    as it may be a run that another instance has not written yet."""
    for attempt in range(2):
        if attempt:
            await asyncio.sleep(RECHECK_S)
        tree, complete = await load_tree(conversation_id)
        if named is None or named in tree:
            return tree
        if not complete:  # the database is down and the run is not one of this process's
            raise ClientError(UNAVAILABLE, "conversations are unavailable; try again", ref)
    raise UnknownRun(named, ref)


async def load_tree(conversation_id: str) -> tuple[Tree, bool]:
    """The conversation's runs, written and in memory; False with it when the database failed."""
    complete = True
    try:
        tree = await database_sync_to_async(_stored_tree)(conversation_id)
    except Exception:  # the runs of this process still count
        tree, complete = Tree(), False
    for rec in pending_recorders():
        if rec.conversation == conversation_id:
            tree.add(rec.run_id, rec.parent, rec.started_at)
    return tree, complete


def _stored_tree(conversation_id: str) -> Tree:
    """The written runs of the conversation."""
    tree = Tree()
    rows = Run.objects.using(records_db()).filter(conversation_id=conversation_id)
    for run_id, parent, started in rows.values_list("run_id", "parent", "started_at"):
        tree.add(run_id, parent, started.timestamp())
    return tree


async def load_history(conversation_id: str, parent: str | None = None, tree: Tree | None = None) -> History:
    """The turns of the branch that ends at `parent` (default: the newest run), within the
    configured bounds; empty if unreadable."""
    cfg = settings.STREAMS
    max_turns, max_chars = cfg["HISTORY_MAX_TURNS"], cfg["HISTORY_MAX_CHARS"]
    if max_turns <= 0:
        return History()
    if tree is None:
        tree, _ = await load_tree(conversation_id)
    if parent is None:
        parent = tree.newest() or ""
    recent = {r.run_id: r for r in pending_recorders() if r.conversation == conversation_id}
    # Runs still running and turns without an answer are skipped: a few more than the bound.
    chain = tree.path_to(parent)[-(max_turns + len(recent)) :]
    try:
        rows = await database_sync_to_async(_stored_turns)([r for r in chain if r not in recent])
    except Exception:  # history is context, not the run: a run without it beats no run
        rows = {}
    for run_id in chain:
        rec = recent.get(run_id)
        if rec is not None and rec.ended_at is not None and rec.tasks:
            rows[run_id] = (rec.input, rec.delivered_text(next(iter(rec.tasks))))
    turns = [rows[r] for r in chain if r in rows and rows[r][1]]
    return History(bound(turns, max_turns, max_chars))


def bound(turns: list[tuple[str, str]], max_turns: int, max_chars: int) -> tuple[tuple[str, str], ...]:
    """The newest turns, at most `max_turns`, whole, together at most `max_chars` characters."""
    kept: list[tuple[str, str]] = []
    used = 0
    for q, a in reversed(turns[-max_turns:] if max_turns > 0 else []):
        used += len(q) + len(a)
        if used > max_chars:
            break
        kept.append((q, a))
    return tuple(reversed(kept))


def _stored_turns(run_ids: list[str]) -> dict[str, tuple[str, str]]:
    """run_id -> (input, delivered answer) of those of the runs that ended, from the database."""
    if not run_ids:
        return {}
    runs = dict(
        Run.objects.using(records_db())
        .filter(run_id__in=run_ids)
        .exclude(status="running")
        .values_list("run_id", "input")
    )
    answers = {
        run_id: text[:delivered]
        for run_id, text, delivered in TaskRun.objects.using(records_db())
        .filter(run_id__in=list(runs), position=0)
        .values_list("run_id", "text", "delivered_chars")
    }
    return {run_id: (q, answers.get(run_id, "")) for run_id, q in runs.items()}


def conversation_detail(owner: str, conversation_id: str, branch: str | None = None) -> dict | None:
    """The PROTOCOL.md shape of the owner's conversation: the turns of one branch, first turn
    first (the current branch, or the one through the run `branch`); None if not theirs.

    Each turn carries `versions`, the run ids of every version of it, oldest first. Each
    task's `text` is what the client received of it; a task of a cancelled run that the
    client did not get whole is `cancelled`. Beyond the contract's fields each task carries
    `finish_reason` (None when the provider gave none) and `error` ({code, message} or None).
    A `branch` that is not a run of the conversation raises UnknownRun.
    """
    conversation = Conversation.objects.using(records_db()).filter(pk=conversation_id, owner=owner).first()
    if conversation is None:
        return None
    tree = _stored_tree(conversation_id)
    if branch is not None and branch not in tree:
        raise UnknownRun(branch)
    path = tree.branch(branch)
    children = tree.children()
    runs = {r.run_id: r for r in conversation.runs.filter(run_id__in=path).prefetch_related("tasks")}
    turns = []
    for run in (runs[r] for r in path if r in runs):  # (retention may remove one meanwhile)
        rows = {t.key: t for t in run.tasks.all()}
        tasks = []
        for spec in run.pipeline_snapshot.get("tasks", []):
            row = rows.get(spec["key"])
            if row is None:  # not recorded (yet): still to come, or cut off by the run's end
                status = "pending" if run.status == "running" else "cancelled"
                tasks.append(
                    {
                        "key": spec["key"],
                        "title": spec.get("title", ""),
                        "status": status,
                        "text": "",
                        "finish_reason": None,
                        "error": None,
                    }
                )
                continue
            text = row.text[: row.delivered_chars]
            status = row.status
            if run.status == "cancelled" and len(text) < len(row.text):
                status = "cancelled"
            # What a reloaded page needs to show the task as the live one did: a `length` cut,
            # the error of a failed task.
            error = {"code": row.error_code, "message": row.error_message} if row.error_code else None
            tasks.append(
                {
                    "key": row.key,
                    "title": row.title,
                    "status": status,
                    "text": text,
                    "finish_reason": row.finish_reason or None,
                    "error": error,
                }
            )
        turns.append(
            {
                "run_id": run.run_id,
                "pipeline": run.pipeline,
                "input": run.input,
                "status": run.status,
                "tasks": tasks,
                "versions": tree.versions(run.run_id, children),
            }
        )
    return {"id": conversation.id, "turns": turns}


def owner_conversations(owner: str, limit: int = 100) -> list[dict]:
    """The owner's conversations, most recently used first: id, title, updated (epoch seconds)."""
    rows = (
        Conversation.objects.using(records_db())
        .filter(owner=owner)
        .order_by("-updated")
        .values_list("id", "title", "updated")
    )
    return [{"id": i, "title": t, "updated": u.timestamp()} for i, t, u in rows[:limit]]
