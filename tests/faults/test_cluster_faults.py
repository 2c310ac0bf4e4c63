"""The fault suite on the cluster (bench/faults.py, ADR 0028), in its short form: `scripts/test
faults` starts `scripts/services up --cluster`, runs this, and stops the cluster.

One run injects the five faults in turn under steady ingest and queries; the test then holds
each row to the guarantees: nothing that got a 202 lost, nothing stored twice that the client
sent once, the pipeline back (a fresh probe visible) within the bound. The table goes to
build/faults.md. OPSPILOT_FAULTS_FULL=1 runs the long form.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from bench.faults import run_faults, table

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
RECOVERY_BOUND_S = 240.0


def on_the_cluster() -> bool:
    return len(os.environ.get("OPSPILOT_OPENSEARCH_URL", "").split(",")) >= 3 and len(
        os.environ.get("OPSPILOT_AMQP_URL", "").split(",")) >= 3


async def test_nothing_accepted_is_lost_or_doubled_through_each_fault() -> None:
    if not on_the_cluster():
        if os.environ.get("CI") or os.environ.get("OPSPILOT_REQUIRE_SERVICES") == "1":
            pytest.fail("the fault suite needs the cluster: scripts/services up --cluster")
        pytest.skip('the cluster is not up: eval "$(bash scripts/services env --cluster)"')
    rows = await run_faults(short=os.environ.get("OPSPILOT_FAULTS_FULL") != "1")
    report = table(rows)
    out = ROOT / "build" / "faults.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text(report + "\n\n" + "\n".join(f"- {r.fault}: {r.detail}" for r in rows) + "\n")
    print("\n" + report)
    assert len(rows) == 6, report  # five faults and the end-of-run census
    for row in rows:
        assert row.lost == 0, f"{row.fault}: {row.detail}"
        assert row.duplicated == 0, f"{row.fault}: {row.detail}"
        assert 0 <= row.recover_s <= RECOVERY_BOUND_S, f"{row.fault}: {row.detail}"
