"""`manage.py export_trace RUN_ID [--otlp]`: print one run's record and trace as JSON (shared/PROTOCOL.md
shape), or send it as an OpenTelemetry trace to the configured OTLP endpoint."""

import json

from django.core.management.base import BaseCommand, CommandError

from streams.records.trace import export_trace


class Command(BaseCommand):
    """Print a run's trace, or export it over OTLP; an unknown run id is an error (exit status 1)."""

    help = "Print a run's record and token-level trace as one JSON object (--otlp: send it as a trace)."

    def add_arguments(self, parser):
        """RUN_ID, --otlp."""
        parser.add_argument("run_id", metavar="RUN_ID")
        parser.add_argument(
            "--otlp",
            action="store_true",
            help="send the run as an OpenTelemetry trace, with its recorded times, to "
            "OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT",
        )

    def handle(self, *args, run_id: str, otlp: bool = False, **options):
        """Look the run up and print or export it."""
        if otlp:
            self._export_otlp(run_id)
            return
        data = export_trace(run_id)
        if data is None:
            raise CommandError(_unknown(run_id))
        self.stdout.write(json.dumps(data, ensure_ascii=False))

    def _export_otlp(self, run_id: str) -> None:
        """Build the run's spans from its records and send them; fail when the collector refused them."""
        from streams.telemetry import config, exporting, replay, spans, upstream

        if not config.enabled():
            raise CommandError(
                "tracing is off: set OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) "
                "and leave OTEL_SDK_DISABLED unset"
            )
        data = replay.run_data(run_id)
        if data is None:
            raise CommandError(_unknown(run_id))
        exporter = exporting.new_exporter()
        provider = exporting.build_provider(exporter)
        spans.emit(
            exporting.tracer_of(provider),
            data,
            content=config.capture_content(),
            server_of=upstream.server_of,
        )
        provider.shutdown()  # exports what is queued
        if exporter.failed:
            raise CommandError(f"the OTLP endpoint did not accept the trace ({exporter.failed} spans lost)")
        self.stdout.write(f"run {run_id}: {len(data.tasks) + 1} spans sent")


def _unknown(run_id: str) -> str:
    return f"no run with id {run_id!r} (never recorded, or pruned)"
