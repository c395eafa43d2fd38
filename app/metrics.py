"""Prometheus metrics, in a registry of the app's own (two apps in one process never clash)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "viraliency_requests",
            "HTTP requests by route template, method and status code.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "viraliency_request_duration_seconds",
            "Time from request start to the end of the response, by route and method.",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "viraliency_batch_size",
            "Images per forward pass.",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.yielded_batches = Counter(
            "viraliency_forward_yielded_batches",
            "CPU forward passes run with fewer torch threads, their cores left to the decoding "
            "threads while more decoding was queued than the batch would take (app/cores.py).",
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "viraliency_queue_depth",
            "Images admitted and not yet scored.",
            registry=self.registry,
        )
        self.admitted = Counter(
            "viraliency_admitted_requests",
            "Requests admitted to the queue (each is answered, within its deadline if the "
            "estimate holds).",
            registry=self.registry,
        )
        self.service_rate = Gauge(
            "viraliency_service_rate_images_per_second",
            "Live estimate of the images/s the device scores (EWMA over busy time; the warm-up "
            "rate before the first batch).",
            registry=self.registry,
        )
        self.estimated_wait = Gauge(
            "viraliency_estimated_wait_seconds",
            "Estimated time until one more image would be scored: (queued images + 1) / rate, "
            "plus how late the batch in flight is past its expected time.",
            registry=self.registry,
        )
        self.admission_limit = Gauge(
            "viraliency_admission_limit_seconds",
            "Longest estimated wait a request is admitted with: (1 - deadline_margin) x "
            "request_deadline_s.",
            registry=self.registry,
        )
        self.queued_bytes = Gauge(
            "viraliency_queued_upload_bytes",
            "Upload bytes held by admitted requests (at most max_queued_bytes).",
            registry=self.registry,
        )
        self.disconnects = Counter(
            "viraliency_client_disconnects",
            "Requests whose client went away before its body was received (not client errors).",
            registry=self.registry,
        )
        self.renders_in_flight = Gauge(
            "viraliency_renders_in_flight",
            "Heatmaps and region maps being drawn (at most max_concurrent_renders).",
            registry=self.registry,
        )
        self.rejections = Counter(
            "viraliency_rejections",
            "Requests refused, by reason (the error code of the JSON answer).",
            ["reason"],
            registry=self.registry,
        )
        self.heatmap_store_items = Gauge(
            "viraliency_heatmap_store_items",
            "Images kept for GET /heatmap.",
            registry=self.registry,
        )
        self.heatmap_store_bytes = Gauge(
            "viraliency_heatmap_store_bytes",
            "Bytes kept for GET /heatmap.",
            registry=self.registry,
        )

        self.heatmap_store_failures = Counter(
            "viraliency_heatmap_store_failures",
            "Calls to the shared heatmap store that failed or timed out, by operation.",
            ["operation"],
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
