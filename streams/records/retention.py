"""Retention of run records: old runs and their traces go; pipelines and used conversations stay."""

from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from ..models import Conversation, Run, RunTrace, TaskRun
from .store import records_db

__all__ = ["prune_runs"]

# Runs deleted per transaction: a large backlog never holds one long lock.
CHUNK = 500


def prune_runs(older_than_days: float, *, traces_only: bool = False) -> dict[str, int]:
    """Delete runs started more than `older_than_days` ago (or only their traces); return counts.

    Runs take their task records and trace with them. A conversation goes only when no run of
    it is left and it was not used since the cut-off; pipelines are never touched.
    """
    db = records_db()
    cutoff = timezone.now() - timedelta(days=older_than_days)
    old = Run.objects.using(db).filter(started_at__lt=cutoff)
    counts = {"runs": 0, "traces": 0, "conversations": 0}
    if traces_only:
        with transaction.atomic(using=db):
            counts["traces"], _ = RunTrace.objects.using(db).filter(run__in=old).delete()
            TaskRun.objects.using(db).filter(run__in=old).update(pieces=[])
        return counts
    while ids := list(old.order_by("started_at").values_list("run_id", flat=True)[:CHUNK]):
        with transaction.atomic(using=db):
            counts["traces"] += RunTrace.objects.using(db).filter(run_id__in=ids).delete()[0]
            TaskRun.objects.using(db).filter(run_id__in=ids).delete()
            counts["runs"] += Run.objects.using(db).filter(run_id__in=ids).delete()[0]
    unused = Conversation.objects.using(db).filter(updated__lt=cutoff, runs__isnull=True)
    counts["conversations"], _ = unused.delete()
    return counts
