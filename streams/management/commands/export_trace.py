"""`manage.py export_trace RUN_ID`: print one run's record and trace as JSON (shared/PROTOCOL.md shape)."""

import json

from django.core.management.base import BaseCommand, CommandError

from streams.records.trace import export_trace


class Command(BaseCommand):
    """Print a run's trace; an unknown run id is an error (exit status 1)."""

    help = "Print a run's record and token-level trace as one JSON object."

    def add_arguments(self, parser):
        """RUN_ID."""
        parser.add_argument("run_id", metavar="RUN_ID")

    def handle(self, *args, run_id: str, **options):
        """Look the run up and print it."""
        data = export_trace(run_id)
        if data is None:
            raise CommandError(f"no run with id {run_id!r} (never recorded, or pruned)")
        self.stdout.write(json.dumps(data, ensure_ascii=False))
