"""Alert rules, notification channels and incidents: /api/rules, /api/channels, /api/incidents.

Every route acts on the project of `X-Project-ID` after the bearer token's membership check
(viewers read; members and above change rules, channels and incidents);
an id of another project answers 404, exactly like an id that does not exist. Channel
secrets are write-only, and a channel's target is shown without credentials, query string
or (for Slack) the token segment of its URL.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Annotated, Any

from aiohttp import web
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, StringConstraints

from opspilot.application.alerting import AlertRules, RuleSpec
from opspilot.domain.alerts import (
    ChannelType,
    Comparator,
    IncidentStatus,
    RuleKind,
    Severity,
)
from opspilot.domain.errors import ValidationError
from opspilot.domain.metrics import MAX_TAGS, Aggregation
from opspilot.domain.storable import check_text
from opspilot.domain.tenancy import Role
from opspilot.domain.timewindow import parse_compound_duration, parse_duration
from opspilot.entrypoints.api import openapi
from opspilot.entrypoints.api import responses_alerts as ra
from opspilot.entrypoints.api.guards import project_principal, query_project
from opspilot.entrypoints.api.parsing import json_body, query_params
from opspilot.entrypoints.api.responses import json_answer
from opspilot.entrypoints.api.schemas import (
    Flag,
    Name,
    ServiceName,
    Strict,
    TagKey,
    TagValue,
    storable,
)

ALERTS = web.AppKey("alert_rules", AlertRules)

Text = Annotated[str, storable(1, 200, strip=True, name=True)]
Id = Annotated[str, storable(1, 100)]
Duration = Annotated[str, StringConstraints(pattern=r"^[1-9]\d{0,5}[smhd]$")]
# `0`, or a Prometheus-style duration: 0s, 90s, 1m30s, 1h, 2d12h (at most 6 digits a unit;
# spelled without look-ahead, which pydantic-core's regex engine does not have)
_H, _M, _S = r"(?:\d{1,6}h)?", r"(?:\d{1,6}m)?", r"(?:\d{1,6}s)?"
MaybeZeroDuration = Annotated[str, StringConstraints(
    pattern=rf"^(?:0|\d{{1,6}}d{_H}{_M}{_S}|\d{{1,6}}h{_M}{_S}|\d{{1,6}}m{_S}|\d{{1,6}}s)$")]
# strict: a JSON number only (lax mode would read `false` as 0.0)
Threshold = Annotated[float, Field(allow_inf_nan=False, strict=True)]
Tags = dict[TagKey, TagValue]


# -- request models ------------------------------------------------------------------------


class RuleBody(Strict):
    """A whole rule (POST /api/rules, PUT /api/rules/{id}). `threshold` is the limit of a
    threshold rule, or the anomaly score in (0, 1] of an anomaly rule (default 0.75, ADR 0012)."""

    name: Text
    metric_name: Name
    kind: RuleKind = RuleKind.THRESHOLD
    service_name: ServiceName | None = None
    tags: Tags = Field(default_factory=dict, max_length=MAX_TAGS)
    aggregation: Aggregation = Aggregation.AVG
    comparator: Comparator = Comparator.GT
    threshold: Threshold | None = None
    window: Duration = Field("5m", description="e.g. 1m, 5m, 1h (at most 1d)")
    for_duration: MaybeZeroDuration = Field("0", description="how long the condition must hold")
    severity: Severity = Severity.WARNING
    channels: list[Id] = Field(default_factory=list, max_length=10)
    enabled: Flag = True


class RulePatch(Strict):
    """Some fields of a rule (PATCH /api/rules/{id}); the others keep their value. Only
    `service_name` and `threshold` may be set to null: for the others None means "not given",
    `_changes` refuses an explicit null, and the JSON schema does not admit one."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, json_schema_extra=lambda schema: _not_nullable(schema)
    )

    name: Text | None = None
    metric_name: Name | None = None
    kind: RuleKind | None = None
    service_name: ServiceName | None = None
    tags: Annotated[Tags, Field(max_length=MAX_TAGS)] | None = None
    aggregation: Aggregation | None = None
    comparator: Comparator | None = None
    threshold: Threshold | None = None
    window: Duration | None = None
    for_duration: MaybeZeroDuration | None = None
    severity: Severity | None = None
    channels: Annotated[list[Id], Field(max_length=10)] | None = None
    enabled: Flag | None = None


class ChannelBody(Strict):
    name: Annotated[str, storable(1, 100, strip=True, name=True)]
    type: ChannelType
    # `url` (webhook, slack) and `to` (email) are what users type; `target` is the name
    # the API answers with. Giving two of them is refused (the others are extra inputs).
    target: Annotated[str, storable(3, 2000)] = Field(
        description="URL for webhook and slack; comma-separated addresses for email"
                    " (also accepted as `url` or `to`)",
        validation_alias=AliasChoices("target", "url", "to"),
    )
    secret: Annotated[str, storable(16, 256)] | None = Field(
        None, description="webhook only: HMAC-SHA256 key of X-OpsPilot-Signature; write-only"
    )


class IncidentParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    status: IncidentStatus | None = None
    rule_id: Id | None = None
    limit: int = Field(default=100, ge=1, le=1000)


NULLABLE = {"service_name", "threshold"}


def _not_nullable(schema: dict[str, Any]) -> None:
    """Takes null (and the `"default": null` that would contradict it) out of the schema of
    each property but those in NULLABLE; and says a patch changes at least one field."""
    schema["minProperties"] = 1
    for name, prop in schema.get("properties", {}).items():
        if name in NULLABLE:
            continue
        if prop.get("default", ...) is None:
            del prop["default"]
        branches = [b for b in prop.get("anyOf", ()) if b != {"type": "null"}]
        if "anyOf" in prop and len(branches) == 1:
            del prop["anyOf"]
            prop.update(branches[0])


def _duration(text: str, field: str) -> timedelta:
    return timedelta(0) if text == "0" else parse_duration(text, field)


def _hold_for(text: str, field: str) -> timedelta:
    return timedelta(0) if text == "0" else parse_compound_duration(text, field)


def _spec(body: RuleBody) -> RuleSpec:
    return RuleSpec(
        name=body.name, metric_name=body.metric_name, kind=body.kind,
        window=_duration(body.window, "window"), service_name=body.service_name,
        tags=body.tags, aggregation=body.aggregation, comparator=body.comparator,
        threshold=body.threshold, for_duration=_hold_for(body.for_duration, "for_duration"),
        severity=body.severity, channels=tuple(body.channels), enabled=body.enabled,
    )


def _changes(patch: RulePatch) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    for field in sorted(patch.model_fields_set):
        value = getattr(patch, field)
        if value is None and field not in NULLABLE:
            raise ValidationError(field, "may not be null")
        if field == "window" and value is not None:
            value = _duration(value, field)
        elif field == "for_duration" and value is not None:
            value = _hold_for(value, field)
        elif field == "channels":
            value = tuple(value)
        changes[field] = value
    if not changes:
        raise ValidationError("body", "name at least one field to change")
    return changes


# -- handlers ------------------------------------------------------------------------------


def _alerts(request: web.Request) -> AlertRules:
    return request.app[ALERTS]


async def create_rule(request: web.Request) -> web.Response:
    project_id = await query_project(request, role=Role.MEMBER)
    body = await json_body(request, RuleBody)
    rule = await _alerts(request).create_rule(project_id, _spec(body))
    return json_answer(ra.rule_doc(rule), 201)


async def list_rules(request: web.Request) -> web.Response:
    project_id = await query_project(request)
    views = await _alerts(request).list_rules(project_id)
    return json_answer(ra.rules_doc([(v.rule, v.state) for v in views]))


async def get_rule(request: web.Request) -> web.Response:
    project_id = await query_project(request)
    view = await _alerts(request).get_rule(project_id, _id(request, "rule_id"))
    return json_answer(ra.rule_doc(view.rule, view.state))


async def replace_rule(request: web.Request) -> web.Response:
    project_id = await query_project(request, role=Role.MEMBER)
    body = await json_body(request, RuleBody)
    rule = await _alerts(request).replace_rule(project_id, _id(request, "rule_id"), _spec(body))
    return json_answer(ra.rule_doc(rule))


async def patch_rule(request: web.Request) -> web.Response:
    project_id = await query_project(request, role=Role.MEMBER)
    changes = _changes(await json_body(request, RulePatch))
    rule = await _alerts(request).update_rule(project_id, _id(request, "rule_id"), changes)
    return json_answer(ra.rule_doc(rule))


async def delete_rule(request: web.Request) -> web.Response:
    project_id = await query_project(request, role=Role.MEMBER)
    await _alerts(request).delete_rule(project_id, _id(request, "rule_id"))
    return web.Response(status=204)


def _toggle(enabled: bool) -> Callable[[web.Request], Any]:
    async def handler(request: web.Request) -> web.Response:
        project_id = await query_project(request, role=Role.MEMBER)
        rule = await _alerts(request).set_enabled(project_id, _id(request, "rule_id"), enabled)
        return json_answer(ra.rule_doc(rule))

    return handler


async def create_channel(request: web.Request) -> web.Response:
    project_id = await query_project(request, role=Role.MEMBER)
    body = await json_body(request, ChannelBody)
    channel = await _alerts(request).create_channel(
        project_id, body.name, body.type, body.target, body.secret
    )
    return json_answer(ra.channel_doc(channel), 201)


async def list_channels(request: web.Request) -> web.Response:
    project_id = await query_project(request)
    channels = await _alerts(request).list_channels(project_id)
    return json_answer(ra.channels_doc(channels))


async def get_channel(request: web.Request) -> web.Response:
    project_id = await query_project(request)
    channel = await _alerts(request).get_channel(project_id, _id(request, "channel_id"))
    return json_answer(ra.channel_doc(channel))


async def delete_channel(request: web.Request) -> web.Response:
    project_id = await query_project(request, role=Role.MEMBER)
    await _alerts(request).delete_channel(project_id, _id(request, "channel_id"))
    return web.Response(status=204)


async def test_channel(request: web.Request) -> web.Response:
    project_id = await query_project(request, role=Role.MEMBER)
    attempt = await _alerts(request).test_channel(project_id, _id(request, "channel_id"))
    return json_answer(ra.channel_test_doc(attempt))


async def list_incidents(request: web.Request) -> web.Response:
    project_id = await query_project(request)
    params = query_params(request, IncidentParams)
    found = await _alerts(request).list_incidents(
        project_id, params.status, params.rule_id, params.limit
    )
    return json_answer(ra.incidents_doc(found))


async def get_incident(request: web.Request) -> web.Response:
    project_id = await query_project(request)
    view = await _alerts(request).get_incident(project_id, _id(request, "incident_id"))
    return json_answer(ra.incident_detail_doc(view.incident, view.deliveries))


async def acknowledge_incident(request: web.Request) -> web.Response:
    actor, project_id = await project_principal(request, Role.MEMBER)
    incident = await _alerts(request).acknowledge(project_id, _id(request, "incident_id"), actor.user_id)
    return json_answer(ra.incident_doc(incident))


async def resolve_incident(request: web.Request) -> web.Response:
    actor, project_id = await project_principal(request, Role.MEMBER)
    incident = await _alerts(request).resolve(project_id, _id(request, "incident_id"), actor.user_id)
    return json_answer(ra.incident_doc(incident))


def _id(request: web.Request, name: str) -> str:
    value = request.match_info[name]
    if not 1 <= len(value) <= 100:
        raise ValidationError(name, "1-100 characters")
    return check_text(value, name)


# -- registration --------------------------------------------------------------------------


def register_routes(app: web.Application) -> None:
    add = app.router.add_route
    add("POST", "/api/rules", create_rule)
    add("GET", "/api/rules", list_rules)
    add("GET", "/api/rules/{rule_id}", get_rule)
    add("PUT", "/api/rules/{rule_id}", replace_rule)
    add("PATCH", "/api/rules/{rule_id}", patch_rule)
    add("DELETE", "/api/rules/{rule_id}", delete_rule)
    add("POST", "/api/rules/{rule_id}/enable", _toggle(True))
    add("POST", "/api/rules/{rule_id}/disable", _toggle(False))
    add("POST", "/api/channels", create_channel)
    add("GET", "/api/channels", list_channels)
    add("GET", "/api/channels/{channel_id}", get_channel)
    add("DELETE", "/api/channels/{channel_id}", delete_channel)
    add("POST", "/api/channels/{channel_id}/test", test_channel)
    add("GET", "/api/incidents", list_incidents)
    add("GET", "/api/incidents/{incident_id}", get_incident)
    add("POST", "/api/incidents/{incident_id}/acknowledge", acknowledge_incident)
    add("POST", "/api/incidents/{incident_id}/resolve", resolve_incident)


def alert_routes(service: AlertRules) -> Callable[[web.Application], None]:
    """For `ApiServices.extra_routes`: stores the use cases on the app and adds the routes."""

    def register(app: web.Application) -> None:
        app[ALERTS] = service
        register_routes(app)

    return register


_Op = openapi.Operation
_RULE_RULES = (
    "threshold: required by threshold rules; for anomaly rules a score in (0, 1], and anomaly "
    "rules need the analyzer", "channels: ids of this project's channels",
    "window and for_duration: at most 1 day",
)
_CHANNEL_RULES = (
    "target: for webhook and slack an http(s) URL without credentials whose host is, and "
    "resolves to, a public address (or is listed in OPSPILOT_WEBHOOK_ALLOWLIST); for email "
    "1-10 addresses, comma-separated, in OPSPILOT_EMAIL_ALLOWED_DOMAINS",
    "secret: webhook channels only",
)
OPERATIONS = (
    _Op("post", "/api/rules", "Create an alert rule", "bearer", body=RuleBody, success=201,
        response=ra.Rule, beyond_schema=_RULE_RULES),
    _Op("get", "/api/rules", "List the project's alert rules with their state", "bearer",
        response=ra.RuleList),
    _Op("get", "/api/rules/{rule_id}", "One alert rule with its state", "bearer",
        response=ra.Rule),
    _Op("put", "/api/rules/{rule_id}", "Replace an alert rule", "bearer", body=RuleBody,
        response=ra.Rule, beyond_schema=_RULE_RULES),
    _Op("patch", "/api/rules/{rule_id}", "Change some fields of an alert rule", "bearer",
        body=RulePatch, response=ra.Rule, beyond_schema=_RULE_RULES),
    _Op("delete", "/api/rules/{rule_id}", "Delete an alert rule (resolves its incident)",
        "bearer", success=204),
    _Op("post", "/api/rules/{rule_id}/enable", "Enable an alert rule", "bearer",
        response=ra.Rule),
    _Op("post", "/api/rules/{rule_id}/disable", "Disable an alert rule (resolves its incident)",
        "bearer", response=ra.Rule),
    _Op("post", "/api/channels", "Create a notification channel", "bearer", body=ChannelBody,
        success=201, response=ra.NotificationChannel, beyond_schema=_CHANNEL_RULES),
    _Op("get", "/api/channels", "List notification channels (secrets never shown)", "bearer",
        response=ra.ChannelList),
    _Op("get", "/api/channels/{channel_id}", "One notification channel", "bearer",
        response=ra.NotificationChannel),
    _Op("delete", "/api/channels/{channel_id}", "Delete a channel no rule uses", "bearer",
        success=204, conflict="the channel is used by rules"),
    _Op("post", "/api/channels/{channel_id}/test", "Send a test notification once (at most "
        "OPSPILOT_CHANNEL_TESTS_PER_HOUR a channel, OPSPILOT_PROJECT_CHANNEL_TESTS_PER_HOUR a "
        "project; then 429)", "bearer", response=ra.ChannelTestResult),
    _Op("get", "/api/incidents", "List incidents, newest first", "bearer", query=IncidentParams,
        response=ra.IncidentList),
    _Op("get", "/api/incidents/{incident_id}", "One incident with timeline and deliveries",
        "bearer", response=ra.IncidentDetail),
    _Op("post", "/api/incidents/{incident_id}/acknowledge", "Acknowledge an incident", "bearer",
        conflict="the incident is already resolved", response=ra.Incident),
    _Op("post", "/api/incidents/{incident_id}/resolve", "Resolve an incident by hand", "bearer",
        response=ra.Incident),
)
if not any(op.path == "/api/rules" for op in openapi.EXTRA_OPERATIONS):
    openapi.EXTRA_OPERATIONS.extend(OPERATIONS)
