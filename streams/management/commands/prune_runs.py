"""`manage.py prune_runs --older-than DAYS`: delete old run records and traces (nothing else)."""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from streams.records.retention import prune_runs


class Command(BaseCommand):
    """Delete runs (with their task records and traces) started more than DAYS ago."""

    help = (
        "Delete runs started more than DAYS ago, with their task records and traces "
        "(default: STREAMS_RECORDS_RETENTION_DAYS). Conversations left without runs go too; "
        "pipelines are never touched."
    )

    def add_arguments(self, parser):
        """--older-than DAYS, --traces-only."""
        parser.add_argument("--older-than", type=float, metavar="DAYS", help="age in days (fractions too)")
        parser.add_argument(
            "--traces-only", action="store_true", help="keep the runs, delete only their traces and pieces"
        )

    def handle(self, *args, older_than=None, traces_only=False, **options):
        """Prune and say what went."""
        days = settings.STREAMS["RECORDS_RETENTION_DAYS"] if older_than is None else older_than
        if days < 0:
            raise CommandError("--older-than must be 0 or more days")
        counts = prune_runs(days, traces_only=traces_only)
        self.stdout.write(
            f"pruned records older than {days:g} days: {counts['runs']} runs, {counts['traces']} traces, "
            f"{counts['conversations']} conversations"
        )
