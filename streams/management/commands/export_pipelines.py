"""`manage.py export_pipelines`: print every pipeline as JSON in the pipelines-as-files format."""

import json

from django.core.management.base import BaseCommand, CommandError

from streams.pipelines.files import export_pipelines


class Command(BaseCommand):
    """Export pipelines to stdout or --output FILE."""

    help = "Print every pipeline as JSON (the format import_pipelines reads)."

    def add_arguments(self, parser):
        """--output FILE."""
        parser.add_argument("--output", "-o", metavar="FILE", help="write to FILE instead of stdout")

    def handle(self, *args, output=None, **options):
        """Serialise and write."""
        text = json.dumps(export_pipelines(), indent=2, ensure_ascii=False) + "\n"
        if output:
            try:
                with open(output, "w", encoding="utf-8") as fh:
                    fh.write(text)
            except OSError as exc:
                raise CommandError(f"cannot write {output}: {exc.strerror or exc}") from exc
        else:
            # ending="" because `text` already ends with its newline.
            self.stdout.write(text, ending="")
