"""A real OTLP/HTTP trace receiver for tests and the benchmark: decodes ExportTraceServiceRequest.

    with OTLPReceiver() as rx:          # 127.0.0.1, a free port, a thread of its own
        os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = rx.endpoint
        ...
        spans = rx.wait_for_spans(4)

Each received span becomes a `ReceivedSpan` (ids as hex, attributes as Python values).
`keep=False` only counts spans and bytes (the benchmark's sink); `hold` (a threading.Event)
answers each request only once it is set (a collector that is stuck until the test says).
"""

from __future__ import annotations

import gzip
import threading
import time
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


def value_of(any_value):
    """An OTLP AnyValue as a Python value."""
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return [value_of(v) for v in any_value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: value_of(kv.value) for kv in any_value.kvlist_value.values}
    return getattr(any_value, kind) if kind else None


def attributes_of(kvs) -> dict:
    """OTLP KeyValues as a dict."""
    return {kv.key: value_of(kv.value) for kv in kvs}


@dataclass
class ReceivedSpan:
    """One span as the receiver decoded it."""

    name: str
    kind: int  # opentelemetry.proto.trace.v1.Span.SpanKind
    trace_id: str
    span_id: str
    parent_span_id: str
    start_ns: int
    end_ns: int
    attributes: dict
    status_code: int  # 0 unset, 1 ok, 2 error
    status_message: str
    links: list[dict] = field(default_factory=list)  # {"trace_id", "span_id", "attributes"}
    events: list[dict] = field(default_factory=list)  # {"name", "time_ns", "attributes"}
    resource: dict = field(default_factory=dict)
    scope: str = ""


class OTLPReceiver:
    """POST /v1/traces on 127.0.0.1 (http.server in a thread)."""

    def __init__(self, *, keep: bool = True, port: int = 0, hold: threading.Event | None = None):
        self.keep = keep
        self.hold = hold
        self.spans: list[ReceivedSpan] = []
        self.requests = 0
        self.span_count = 0
        self.bytes = 0
        self.headers: list[dict] = []
        self._cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                encoding = self.headers.get("Content-Encoding", "")
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                if self.path != "/v1/traces":
                    self.send_response(404)
                    self.end_headers()
                    return
                if receiver.hold is not None:
                    receiver.hold.wait()
                receiver._receive(body, dict(self.headers))
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, name="otlp-receiver", daemon=True)

    def _receive(self, body: bytes, headers: dict) -> None:
        request = ExportTraceServiceRequest.FromString(body)
        spans = []
        count = 0
        for rs in request.resource_spans:
            resource = attributes_of(rs.resource.attributes)
            for ss in rs.scope_spans:
                count += len(ss.spans)
                if not self.keep:
                    continue
                for s in ss.spans:
                    spans.append(
                        ReceivedSpan(
                            name=s.name,
                            kind=s.kind,
                            trace_id=s.trace_id.hex(),
                            span_id=s.span_id.hex(),
                            parent_span_id=s.parent_span_id.hex(),
                            start_ns=s.start_time_unix_nano,
                            end_ns=s.end_time_unix_nano,
                            attributes=attributes_of(s.attributes),
                            status_code=s.status.code,
                            status_message=s.status.message,
                            links=[
                                {
                                    "trace_id": li.trace_id.hex(),
                                    "span_id": li.span_id.hex(),
                                    "attributes": attributes_of(li.attributes),
                                }
                                for li in s.links
                            ],
                            events=[
                                {
                                    "name": e.name,
                                    "time_ns": e.time_unix_nano,
                                    "attributes": attributes_of(e.attributes),
                                }
                                for e in s.events
                            ],
                            resource=resource,
                            scope=ss.scope.name,
                        )
                    )
        with self._cond:
            self.requests += 1
            self.bytes += len(body)
            self.span_count += count
            self.spans.extend(spans)
            if self.keep:
                self.headers.append(headers)
            self._cond.notify_all()

    def wait_for_spans(self, n: int, timeout_s: float = 10.0) -> list[ReceivedSpan]:
        """Block until at least `n` spans arrived; return them all (AssertionError on timeout)."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self.span_count < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{self.span_count} spans received, {n} expected")
                self._cond.wait(left)
            return list(self.spans)

    def __enter__(self) -> OTLPReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def main() -> None:
    """Standalone sink (bench): `python -m tests.support.otlp_receiver --port P` counts spans.

    On SIGTERM or SIGINT it logs how many spans it received and exits.
    """
    import argparse
    import logging
    import signal
    import sys

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=4318)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: sys.exit(0))
    with OTLPReceiver(keep=False, port=args.port) as rx:
        logging.info("OTLP/HTTP sink on %s", rx.endpoint)
        try:
            while True:
                time.sleep(3600)
        finally:
            logging.info("%d spans in %d requests", rx.span_count, rx.requests)


if __name__ == "__main__":
    main()
