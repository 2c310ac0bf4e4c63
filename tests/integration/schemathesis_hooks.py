"""Loaded by the schemathesis CLI (`SCHEMATHESIS_HOOKS`) in test_api_fuzz_live.py: the
protocol doors' protobuf bodies are real messages (stamped now, within the retention) or
random bytes, as in the unit fuzzing."""

from __future__ import annotations

from datetime import UTC, datetime

import schemathesis
from hypothesis import strategies as st

from tests.protobuf_bodies import protobuf_bodies

schemathesis.openapi.media_type(
    "application/x-protobuf",
    st.one_of(st.sampled_from(protobuf_bodies(datetime.now(UTC))), st.binary(max_size=64)))
