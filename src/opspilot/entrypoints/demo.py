"""Realistic demo data: an hour of metrics for a few services and a few thousand logs,
with a latency and error spike in the last quarter hour worth an incident."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

SERVICES = ("api", "checkout", "payments")
SPIKE_SERVICE = "checkout"
LOG_TEMPLATES = {
    "INFO": [
        "GET /api/users/{n} 200 in {ms}ms",
        "POST /api/orders 201 in {ms}ms order_id={hex}",
        "cache hit for key user:{n}",
        "worker processed batch of {n} jobs",
    ],
    "DEBUG": ["connection pool size={n} idle={n2}", "feature flag {flag} evaluated to true"],
    "WARN": ["slow query took {ms}ms on table orders", "retrying request to 10.0.{n}.{n2}:8443"],
    "ERROR": [
        "database connection failed after {ms}ms: timeout",
        "payment provider returned 502 for order {hex}",
    ],
}


# Fires on the checkout latency spike of the last quarter hour at the scheduler's next tick.
RULE = {"name": "checkout latency p95 above 300 ms", "metric_name": "latency_ms_p95",
        "service_name": SPIKE_SERVICE, "aggregation": "avg", "comparator": "gt",
        "threshold": 300.0, "window": "5m", "severity": "critical"}


def metric_points(now: datetime, seed: int = 7) -> Iterator[dict[str, Any]]:
    rng = random.Random(seed)
    start = now - timedelta(hours=1)
    for minute in range(60):
        at = start + timedelta(minutes=minute)
        spiking = minute >= 45
        for service in SERVICES:
            base = {"api": 80.0, "checkout": 120.0, "payments": 200.0}[service]
            wave = 10 * math.sin(minute / 9)
            latency = base + wave + rng.gauss(0, 4)
            errors = max(0.0, rng.gauss(0.5, 0.2))
            if spiking and service == SPIKE_SERVICE:
                latency *= 4.5
                errors += 8
            stamp = at.isoformat()
            yield {"name": "latency_ms_p95", "value": round(latency, 2), "service": service,
                   "timestamp": stamp, "tags": {"region": "eu-west-1"}}
            yield {"name": "error_rate", "value": round(errors, 3), "service": service,
                   "timestamp": stamp}
            yield {"name": "cpu_usage", "value": round(35 + wave + rng.gauss(0, 3), 2),
                   "service": service, "timestamp": stamp}
            yield {"name": "request_count", "value": float(rng.randint(900, 1100)),
                   "service": service, "timestamp": stamp}


def log_records(now: datetime, count: int = 3000, seed: int = 11) -> Iterator[dict[str, Any]]:
    rng = random.Random(seed)
    start = now - timedelta(hours=1)
    for i in range(count):
        at = start + timedelta(seconds=3600 * i / count)
        spiking = at >= now - timedelta(minutes=15)
        level = _level(rng, spiking)
        service = SPIKE_SERVICE if spiking and level == "ERROR" else rng.choice(SERVICES)
        text = rng.choice(LOG_TEMPLATES[level]).format(
            n=rng.randint(1, 999), n2=rng.randint(1, 99), ms=rng.randint(2, 3000),
            hex=f"{rng.getrandbits(48):012x}", flag=rng.choice(["new-checkout", "dark-mode"]),
        )
        yield {"level": level, "message": text, "service": service, "timestamp": at.isoformat(),
               "trace_id": f"{rng.getrandbits(64):016x}", "context": {"host": f"web-{i % 4}"}}


def _level(rng: random.Random, spiking: bool) -> str:
    roll = rng.random()
    error_share = 0.25 if spiking else 0.02
    if roll < error_share:
        return "ERROR"
    if roll < error_share + 0.06:
        return "WARN"
    return "DEBUG" if roll > 0.9 else "INFO"


def chunks(items: list[dict[str, Any]], size: int = 1000) -> Iterator[list[dict[str, Any]]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
