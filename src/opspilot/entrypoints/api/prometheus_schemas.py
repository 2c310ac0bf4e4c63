"""The Prometheus HTTP API's parameters and answers as OpenAPI models (routes_prometheus.py).

The routes parse their parameters the way Prometheus does (Unix seconds or RFC 3339 times,
seconds or `1m30s` durations, repeated `match[]`), so these models document, they do not
validate: every parameter is a string, as in Prometheus' own API reference. The answers use
Prometheus' envelope, errors included (`PrometheusError`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Closed(BaseModel):
    """An answer's documented shape: no member beyond those listed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

_TIME = "Unix seconds (a fraction allowed) or RFC 3339"
_DURATION = "seconds (a fraction allowed) or a Prometheus duration such as 1m30s"


class _Params(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class _QueryOptions(_Params):
    timeout: str | None = Field(None, description=f"{_DURATION}: the query is cancelled "
                                "(503, errorType timeout) past it, or past the server's limit")
    lookback_delta: str | None = Field(None, description=f"{_DURATION}: how far back an "
                                       "instant selector looks for a sample (default 5m)")
    stats: str | None = Field(None, description="any value adds `data.stats`; `all` also "
                              "counts the samples read at each step")


class PromInstantParams(_QueryOptions):
    query: str = Field(description="a PromQL expression of the supported subset")
    time: str | None = Field(None, description=f"{_TIME}; default now")


class PromRangeParams(_QueryOptions):
    query: str = Field(description="a PromQL expression of the supported subset")
    start: str = Field(description=_TIME)
    end: str = Field(description=_TIME)
    step: str = Field(description=_DURATION)


class PromSeriesParams(_Params):
    match: list[str] = Field(alias="match[]", description="series selectors (repeated)")
    start: str | None = Field(None, description=f"{_TIME}; default 90 days before end")
    end: str | None = Field(None, description=f"{_TIME}; default now")


class PromLabelsParams(_Params):
    match: list[str] | None = Field(None, alias="match[]",
                                    description="series selectors (repeated); default all")
    start: str | None = Field(None, description=_TIME)
    end: str | None = Field(None, description=_TIME)


class PromMetadataParams(_Params):
    metric: str | None = Field(None, description="one metric family's name")
    limit: str | None = Field(None, description="at most this many metrics (an integer)")


class _Success(Closed):
    status: Literal["success"]
    warnings: list[str] | None = None


class PromQueryData(Closed):
    resultType: Literal["vector", "matrix", "scalar", "string"]  # noqa: N815 (Prometheus' name)
    result: Any = Field(description="vector: [{metric, value: [t, \"v\"]}]; matrix: [{metric, "
                        "values: [[t, \"v\"], …]}]; scalar and string: [t, \"v\"]")
    stats: dict[str, Any] | None = Field(None, description="with `stats`: timings and samples")


class PromQueryAnswer(_Success):
    data: PromQueryData


class PromSeriesAnswer(_Success):
    data: list[dict[str, str]]


class PromLabelsAnswer(_Success):
    data: list[str]


class PromMetadataEntry(Closed):
    type: Literal["counter", "gauge", "histogram", "summary", "unknown"]
    help: str
    unit: str


class PromMetadataAnswer(_Success):
    data: dict[str, list[PromMetadataEntry]]


class PromBuildInfo(Closed):
    version: str
    revision: str
    branch: str
    buildUser: str  # noqa: N815
    buildDate: str  # noqa: N815
    goVersion: str  # noqa: N815
    application: str


class PromBuildInfoAnswer(_Success):
    data: PromBuildInfo


PROMETHEUS_ERROR = {
    "type": "object",
    "required": ["status", "errorType", "error"],
    "properties": {
        "status": {"const": "error"},
        "errorType": {"enum": ["bad_data", "execution", "timeout", "unauthorized", "forbidden",
                               "too_many_requests", "unavailable", "internal"]},
        "error": {"type": "string"},
        "details": {"type": "object", "description": "OpsPilot's addition: the field at fault"},
    },
}
