"""Prometheus remote-write on the in-process API, with WriteRequests built from the
generated types. (The real Prometheus sends to OpsPilot in
tests/integration/test_standard_clients.py.)"""

from __future__ import annotations

import struct
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cramjam
import pytest

from opspilot.adapters.clock_and_ids import FixedClock
from opspilot.domain.ingest import Stream
from opspilot.entrypoints.api.remote_write import remote_write_pb2
from opspilot.entrypoints.api.remote_write.remote_write_pb2 import (
    Label,
    Sample,
    TimeSeries,
    WriteRequest,
)
from tests.unit.conftest import drain

ROOT = Path(__file__).resolve().parents[3]
STALE_NAN = struct.unpack("<d", struct.pack("<Q", 0x7FF0000000000002))[0]
HEADERS = {"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy",
           "X-Prometheus-Remote-Write-Version": "0.1.0"}


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(datetime.now(UTC))


def series(labels: dict[str, str], samples: list[tuple[float, int]]) -> TimeSeries:
    return TimeSeries(labels=[Label(name=k, value=v) for k, v in sorted(labels.items())],
                      samples=[Sample(value=v, timestamp=t) for v, t in samples])


def body(*many: TimeSeries) -> bytes:
    return bytes(cramjam.snappy.compress_raw(WriteRequest(timeseries=many).SerializeToString()))


async def test_labels_become_name_service_and_tags(
    api: Any, tenant: Any, container: Any, clock: FixedClock
) -> None:
    ms = int(clock.now().timestamp() * 1000)
    write = body(
        series({"__name__": "http_requests_total", "job": "shop", "instance": "h:9100",
                "code": "200"}, [(10.0, ms - 2000), (STALE_NAN, ms - 1000), (12.0, ms)]),
        series({"__name__": "up", "job": "shop", "service": "checkout"}, [(1.0, ms)]),
    )
    response = await api.post("/api/v1/write", data=write,
                              headers={**HEADERS, "Authorization": f"Bearer {tenant.api_key}"})
    assert response.status == 204, await response.text()
    await drain(container)
    stored = container.metric_store()._points
    total = stored[(tenant.project_id, "http_requests_total")]
    assert [p.value for p in total] == [10.0, 12.0]  # the staleness marker is skipped
    assert total[0].service == "shop"
    assert dict(total[0].tags) == {"job": "shop", "instance": "h:9100", "code": "200"}
    [up] = stored[(tenant.project_id, "up")]
    assert up.service == "checkout" and dict(up.tags) == {"job": "shop", "service": "checkout"}


async def test_refused_samples_are_named_and_the_rest_kept(
    api: Any, tenant: Any, container: Any, clock: FixedClock
) -> None:
    ms = int(clock.now().timestamp() * 1000)
    write = body(series({"__name__": "ok"}, [(1.0, ms)]),
                 series({"__name__": "too_big"}, [(1e200, ms)]),
                 series({"job": "nameless"}, [(1.0, ms)]))
    response = await api.post("/api/v1/write", data=write,
                              headers={**HEADERS, **tenant.ingest_headers})
    assert response.status == 400  # Prometheus does not retry a 400; the good one is kept
    error = (await response.json())["error"]
    assert error["details"]["field"] == "timeseries[1].samples[0].value"
    assert error["details"]["rejected"] == 2 and error["details"]["accepted"] == 1
    await drain(container)
    assert container.metric_store().count(tenant.project_id) == 1


@pytest.mark.parametrize(("data", "headers", "status", "field"), [
    (b"\x00garbage", HEADERS, 400, "body"),
    (bytes(cramjam.snappy.compress_raw(b"\xff\xff\xff")), HEADERS, 400, "body"),
    (b"x", {**HEADERS, "Content-Encoding": "gzip"}, 415, "Content-Encoding"),
    (b"x", {**HEADERS, "Content-Type": "application/json"}, 415, "Content-Type"),
])
async def test_bad_writes_are_4xx(api: Any, tenant: Any, container: Any, data: bytes,
                                  headers: dict[str, str], status: int, field: str) -> None:
    response = await api.post("/api/v1/write", data=data, headers={**headers, **tenant.ingest_headers})
    assert response.status == status
    assert (await response.json())["error"]["details"]["field"] == field
    assert await container.memory_queue().depth(Stream.METRICS) == 0


async def test_a_write_needs_a_key(api: Any) -> None:
    response = await api.post("/api/v1/write", data=body(), headers=HEADERS)
    assert response.status == 401


def test_the_generated_types_match_their_proto(tmp_path: Path) -> None:
    """remote_write_pb2.py is protoc's output for remote_write.proto, byte for byte."""
    pytest.importorskip("grpc_tools")
    source = ROOT / "src/opspilot/entrypoints/api/remote_write"
    done = subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{source}", f"--python_out={tmp_path}",
         f"--pyi_out={tmp_path}", str(source / "remote_write.proto")],
        capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    for name in ("remote_write_pb2.py", "remote_write_pb2.pyi"):
        assert (tmp_path / name).read_text() == (source / name).read_text(), (
            f"{name} is stale: run scripts/gen-remote-write-proto")
    assert remote_write_pb2.DESCRIPTOR.package == "opspilot.remote_write"


async def test_native_histograms_are_refused_by_name_and_counted(
    api: Any, tenant: Any, container: Any, clock: FixedClock
) -> None:
    """Remote-write 1.0 has no native histograms; one sent anyway (Prometheus with
    `send_native_histograms`) is refused explicitly: 400 naming the field and counting
    them, never silently dropped, while the series' float samples are kept."""
    ms = int(clock.now().timestamp() * 1000)
    native = TimeSeries(labels=[Label(name="__name__", value="rpc_seconds"),
                                Label(name="job", value="api")],
                        # a prompb.Histogram on the wire: count_int=3, schema=0 (opaque here)
                        histograms=[b"\x08\x03\x20\x00", b"\x08\x05\x20\x00"])
    plain = series({"__name__": "up", "job": "api"}, [(1.0, ms)])
    response = await api.post("/api/v1/write", data=body(native, plain),
                              headers={**HEADERS, **tenant.ingest_headers})
    assert response.status == 400
    error = (await response.json())["error"]
    assert error["details"]["field"] == "timeseries[0].histograms"
    assert "native histograms" in error["message"]
    assert (error["details"]["rejected"], error["details"]["accepted"]) == (2, 1)
    await drain(container)
    assert container.metric_store().count(tenant.project_id) == 1
