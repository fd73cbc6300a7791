"""OpenMetrics and the Prometheus text format for ``certkit watch``: the only module that imports prometheus_client.

:func:`exposition` turns a :class:`~certkit.core.watch.CycleReport` into the bytes a scrape gets (OpenMetrics or
the Prometheus text format, as the scraper's ``Accept`` asks: prometheus_client chooses and escapes);
:func:`textfile` into a node-exporter textfile collector file; :class:`MetricsServer` serves ``/metrics`` and
``/healthz`` (404 for anything else) from threads with a timeout per connection and a cap on connections, so a
client that trickles its request holds up only its own thread and never the next scrape.

Label values are ours (the inventory's targets, our CA's names, serials, thumbprints, CRL URLs), never a peer's
free text, so the number of series stays bounded by the inventory.
"""

from __future__ import annotations

import http.server
import socket
import socketserver
import threading
from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder, generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

from certkit.core.watch import CycleReport

__all__ = ["MAX_CONNECTIONS", "REQUEST_TIMEOUT", "MetricsServer", "exposition", "textfile"]

#: Seconds a client may take to send its request and read the answer.
REQUEST_TIMEOUT = 10.0
#: Connections served at once; more are closed at once.
MAX_CONNECTIONS = 32


class _ReportCollector(Collector):
    def __init__(self, report: CycleReport) -> None:
        self.report = report

    def collect(self) -> Iterator[Metric]:
        r = self.report
        expiry = GaugeMetricFamily("certkit_certificate_expiry_days",
                                   "Days until the certificate expires; negative once it has expired.",
                                   labels=["role", "name", "serial", "thumbprint_sha1"])
        seen: set[tuple[str, ...]] = set()
        for c in sorted(r.certificates, key=lambda c: c.days_left):
            labels = (c.role, c.name, c.facts.serial, c.facts.thumbprint_sha1)
            if labels not in seen:  # the same certificate at several addresses of one target: one series
                seen.add(labels)
                expiry.add_metric(list(labels), c.days_left)
        yield expiry
        next_update = GaugeMetricFamily("certkit_crl_next_update_seconds",
                                        "Seconds until our CRL's nextUpdate; negative once it has lapsed.",
                                        labels=["crl", "url"])
        served = GaugeMetricFamily("certkit_crl_served_current",
                                   "1 when the CRL served at its distribution point is our current one, else 0.",
                                   labels=["crl", "url"])
        for crl in r.crls:
            next_update.add_metric([crl.issuer, crl.url or ""], crl.seconds_left)
            if crl.url is not None:
                served.add_metric([crl.issuer, crl.url], 1.0 if crl.served_current else 0.0)
        yield next_update
        yield served
        success = GaugeMetricFamily("certkit_probe_success", "1 when the last probe found no error, else 0.",
                                    labels=["target", "role"])
        duration = GaugeMetricFamily("certkit_probe_duration_seconds", "How long the last probe took.",
                                     labels=["target", "role"])
        code = GaugeMetricFamily("certkit_probe_exit_code",
                                 "The last probe's exit code: 0 fine, 1 error findings, 3 nothing reached.",
                                 labels=["target", "role"])
        for t in r.targets:
            success.add_metric([t.target, t.role], 1.0 if t.success else 0.0)
            duration.add_metric([t.target, t.role], t.duration)
            code.add_metric([t.target, t.role], float(t.exit_code))
        yield success
        yield duration
        yield code
        changes = CounterMetricFamily("certkit_partner_certificate_changes",
                                      "Certificate changes seen at a watched endpoint since the history began.",
                                      labels=["target", "role"])
        for (target, role), n in sorted(r.change_counts.items()):
            changes.add_metric([target, role], float(n))
        yield changes
        yield GaugeMetricFamily("certkit_watch_last_cycle_timestamp_seconds", "When the last watch cycle ran.",
                                value=r.at.timestamp())
        yield GaugeMetricFamily("certkit_watch_cycle_duration_seconds", "How long the last watch cycle took.",
                                value=r.seconds)


def _registry(report: CycleReport) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_ReportCollector(report))
    return registry


def exposition(report: CycleReport, accept: str | None = None) -> tuple[bytes, str]:
    """The scrape body and its Content-Type: OpenMetrics when ``accept`` asks for it, else the text format."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(_registry(report)), content_type


def textfile(report: CycleReport) -> bytes:
    """The node exporter's textfile collector format (the Prometheus text format)."""
    return generate_latest(_registry(report))


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler: type[http.server.BaseHTTPRequestHandler],
                 family: socket.AddressFamily) -> None:
        self.address_family = family
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(address, handler)

    def process_request(self, request: socketserver._RequestType, client_address: object) -> None:
        if not self.slots.acquire(blocking=False):
            self.shutdown_request(request)  # every slot taken (a flood): turned away, never queued
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request: socketserver._RequestType, client_address: object) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def handle_error(self, request: socketserver._RequestType, client_address: object) -> None:
        """A client that timed out or broke off is its own problem: nothing to log."""


class MetricsServer:
    """``/metrics`` and ``/healthz`` on ``host:port`` (port 0: a free one, then :attr:`port`), from a daemon thread.

    ``report`` is called for every scrape and returns the last cycle's report (``None`` before the first cycle:
    ``/metrics`` answers 503 until then, ``/healthz`` says ``starting``).
    """

    def __init__(self, report: Callable[[], CycleReport | None], *, host: str = "127.0.0.1", port: int = 9530) -> None:
        self._report = report
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.server = _Server((host, port), self._handler(), family)
        self.host = host
        self.port: int = int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="certkit-metrics", daemon=True)

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            timeout = REQUEST_TIMEOUT
            server_version = "certkit-watch"
            sys_version = ""

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                report = outer._report()
                if path == "/metrics":
                    if report is None:
                        self._send(503, b"no watch cycle has finished yet\n", "text/plain; charset=utf-8")
                        return
                    body, content_type = exposition(report, self.headers.get("Accept"))
                    self._send(200, body, content_type)
                elif path == "/healthz":
                    self._send(200, b"ok\n" if report is not None else b"starting\n", "text/plain; charset=utf-8")
                else:
                    self._send(404, b"not found: certkit serves /metrics and /healthz\n", "text/plain; charset=utf-8")

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler

    def close(self) -> None:
        """Stop serving and close the socket."""
        if self._thread.is_alive():
            self.server.shutdown()
            self._thread.join(5)
        self.server.server_close()

    def __enter__(self) -> MetricsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
