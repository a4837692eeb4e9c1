"""A conversation's runs as a tree of versions (pure): branches, versions of a turn, the newest run.

Each run follows one earlier run of its conversation, its parent ("" for a first turn). The
versions of a turn are the runs that follow the same parent: a regenerated or edited turn
is a new child of the replaced run's parent. A branch is a path from a first turn down the
tree; the branch through a run continues from it to its newest descendant, so the current
branch (the one through the newest run) is the path to the newest run. A parent that is not
in the tree (removed by retention) counts as none: its followers start a branch.
"""

from dataclasses import dataclass, field

__all__ = ["Tree"]


@dataclass
class Tree:
    """run_id -> (parent, started_at) for one conversation; every lookup is by run_id."""

    nodes: dict[str, tuple[str, float]] = field(default_factory=dict)

    def add(self, run_id: str, parent: str, started_at: float) -> None:
        """A run of the conversation (a later add of the same id replaces the earlier)."""
        self.nodes[run_id] = (parent or "", started_at)

    def __contains__(self, run_id: object) -> bool:
        return run_id in self.nodes

    def parent_of(self, run_id: str) -> str:
        """The run that `run_id` follows, "" for a first turn (or one whose parent is gone)."""
        parent = self.nodes[run_id][0]
        return parent if parent in self.nodes else ""

    def newest(self, among=None) -> str | None:
        """The run started last (of `among`, default all); None when there is none."""
        ids = self.nodes if among is None else among
        return max(ids, key=lambda r: (self.nodes[r][1], r), default=None)

    def path_to(self, run_id: str) -> list[str]:
        """The runs from the first turn down to `run_id`, inclusive."""
        path, seen = [], set()
        while run_id and run_id in self.nodes and run_id not in seen:
            seen.add(run_id)  # a cycle can only come from corrupt rows; never loop on it
            path.append(run_id)
            run_id = self.parent_of(run_id)
        path.reverse()
        return path

    def children(self) -> dict[str, list[str]]:
        """parent ("" for the roots) -> its followers, oldest first."""
        out: dict[str, list[str]] = {}
        for run_id in sorted(self.nodes, key=lambda r: (self.nodes[r][1], r)):
            out.setdefault(self.parent_of(run_id), []).append(run_id)
        return out

    def branch(self, through: str | None = None) -> list[str]:
        """The branch through `through` (default: the newest run), first turn first."""
        if through is None:
            newest = self.newest()
            return self.path_to(newest) if newest is not None else []
        children = self.children()
        below, todo = set(), [through]
        while todo:
            run_id = todo.pop()
            if run_id not in below:
                below.add(run_id)
                todo += children.get(run_id, ())
        return self.path_to(self.newest(below))

    def versions(self, run_id: str, children: dict[str, list[str]] | None = None) -> list[str]:
        """Every version of the turn `run_id` is one of, oldest first (itself included)."""
        children = self.children() if children is None else children
        return children.get(self.parent_of(run_id), [run_id])
