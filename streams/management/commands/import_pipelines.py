"""`manage.py import_pipelines FILE`: create or update pipelines from a JSON file (`-` reads stdin)."""

import json
import sys

from django.core.management.base import BaseCommand, CommandError

from streams.pipelines.files import PipelineError, check_pipelines, import_pipelines


class Command(BaseCommand):
    """Import pipelines; any problem changes nothing and exits non-zero."""

    help = "Create or update pipelines from a JSON file in the pipelines-as-files format ('-' for stdin)."

    def add_arguments(self, parser):
        """FILE and --check."""
        parser.add_argument("file", metavar="FILE", help="JSON file, or - for standard input")
        parser.add_argument("--check", action="store_true", help="only validate the file; change nothing")

    def handle(self, *args, file, check=False, **options):
        """Read, validate, import, report."""
        label = "standard input" if file == "-" else file
        try:
            if file == "-":
                text = sys.stdin.read()
            else:
                with open(file, encoding="utf-8") as fh:
                    text = fh.read()
        except OSError as exc:
            raise CommandError(f"cannot read {file}: {exc.strerror or exc}") from exc
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CommandError(f"{label}: not valid JSON: {exc}") from exc

        try:
            if check:
                problems = check_pipelines(data)
                if problems:
                    raise PipelineError(problems)
                self.stdout.write(f"{label}: OK")
                return
            summary = import_pipelines(data)
        except PipelineError as exc:
            for problem in exc.errors:
                self.stderr.write(problem)
            raise CommandError(f"{label}: {len(exc.errors)} problem(s); nothing was changed") from exc
        for line in summary:
            self.stdout.write(line)
        if not summary:
            self.stdout.write("no pipelines in the file")
