"""Prometheus metrics, and the ASGI middleware that counts and times every request."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


class Metrics:
    """One registry per app, so that several apps (tests) never share counters."""

    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "curator_requests",
            "HTTP requests by route, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.errors = Counter(
            "curator_errors",
            "HTTP responses with status >= 400, by route and status",
            ["route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "curator_request_seconds",
            "request latency by route",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.model_version = Gauge(
            "curator_model_version", "export version being served", registry=self.registry
        )
        self.catalogue_items = Gauge(
            "curator_catalogue_items", "artworks in the catalogue", registry=self.registry
        )
        self.available_items = Gauge(
            "curator_available_items",
            "artworks for sale (not sold originals)",
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "curator_batch_size",
            "recommendation queries answered per model call",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=self.registry,
        )
        self.refused = Counter(
            "curator_refused_requests",
            "requests the HTTP layer refused before any route saw them (serving/http_protocol.py):"
            " 400 unparseable, 408 too slow, 431 head too large; by status",
            ["status"],
            registry=self.registry,
        )
        self.reloads = Counter(
            "curator_reloads", "model reloads by outcome", ["outcome"], registry=self.registry
        )
        self.synced_rows = Counter(
            "curator_synced_rows",
            "rows read from the database's change feed (other replicas' writes, and our own)",
            registry=self.registry,
        )


class RequestMetrics:
    """Pure ASGI middleware: counts and times every HTTP request by its route template."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = 500  # unless the app starts a response

        async def observed_send(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(route, scope["method"], str(status)).inc()
            if status >= 400:
                self.metrics.errors.labels(route, str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - started)
