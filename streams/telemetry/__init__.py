"""Runs as OpenTelemetry traces (OTLP): one trace per run, a GenAI `chat` span per task.

On only when an OTLP endpoint is configured (streams.telemetry.config). Spans are built once a
run has ended, from the data its RunRecorder holds (streams.telemetry.live), or later from the
stored records (streams.telemetry.replay): the same builder (streams.telemetry.spans), so a
live trace and a replayed one look the same.
"""
