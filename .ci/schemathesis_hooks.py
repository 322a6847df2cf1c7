"""Schemathesis hooks of the contract test (.ci/schemathesis).

The OpenAPI document states every rule a request can be checked against on its own: types,
ranges, lengths, patterns, enums. A few rules depend on more than the request's shape, and no
schema can state them; each is covered by its own end-to-end test in `tests/`. For positive
(schema-valid) cases only, these hooks keep generated requests inside those rules, so that the
positive-data check tests everything else; negative cases are sent as generated.

- `Idempotency-Key`: a client sends a new key per new request (reusing one with other
  parameters is a `422 idempotency_key_reused`, tests/it/idempotency.rs). Each valid key gets a
  unique suffix.
"""

import uuid

import schemathesis


def _positive(case) -> bool:
    meta = getattr(case, "meta", None)
    mode = getattr(getattr(meta, "generation", None), "mode", None)
    return mode is None or str(getattr(mode, "value", mode)).lower() == "positive"


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    headers = case.headers or {}
    for name in list(headers):
        if name.lower() != "idempotency-key":
            continue
        value = headers[name]
        valid = isinstance(value, str) and 1 <= len(value) <= 255 and all(
            0x20 <= ord(c) < 0x7F for c in value
        )
        if valid:
            headers[name] = value[:200] + "-" + uuid.uuid4().hex
    case.headers = headers


# The rules no schema can state, kept in positive cases (each has its own test in tests/):
# - orders: the amounts must add up within 64 bits, the discount within the amount, and a
#   claimed `total` must equal Switchyard's (tests/it/orders.rs, api_errors.rs);
# - keys: `expires_at` must be in the future (tests/it/api_keys.rs);
# - endpoints: an `http` endpoint has a `url` and no `config`, other kinds the reverse, with
#   templates that parse and render JSON where JSON is sent, and an integration of the right
#   provider (tests/it/destinations.rs, brokers.rs); the URL must not point at a non-public address, exact event types must be in the
#   catalog, delays at most 7 days and all together within the payload retention, the timeout
#   1 s to 30 s, header names HTTP tokens Switchyard does not set itself (tests/it/ssrf.rs,
#   delivery.rs, retries.rs, signing.rs);
# - secrets: the grace period at most 7 days, a secret that decodes to 24 to 64 bytes;
# - replays: `until` after `since`;
# - integrations: `base_url` must not point at a non-public address, credential names are
#   `[a-z][a-z0-9_]*`, and the config keys Switchyard reads (`health_path`, `api_key_header`,
#   `health_interval`) have their own rules, and inbound secrets must fit their scheme
#   (tests/it/integrations.rs, inbound.rs);
# - event types: a `schema` must be a valid JSON Schema, and a name is not in a family of
#   Switchyard's own events (`order.`, `endpoint.`, `integration.`, `sync.`, `webhook.`)
#   (tests/it/event_types.rs);
# - events: the type must be in the tenant's catalog, so positive posts use the one the script
#   adds (tests/it/events.rs);
# - sync configurations: the source integration must exist and speak SQL (the script creates
#   one), an `incremental` sync needs a cursor and a `full` one takes none, lag and lookback are
#   for timestamp cursors, key columns and mapping targets are unique, each transform has the
#   field its type needs, and a schedule is an interval or a valid cron in a known time zone;
#   a side is the store or an integration, directions fit their sides, conflict strategies are
#   for bidirectional syncs, and rowversion / Change Tracking cursors are SQL Server's
#   (tests/it/sync.rs, sync_api.rs, sync_bidirectional.rs, sync_outbound.rs);
# - sync conflicts: a `merged` resolution has `data`, the others none (sync_bidirectional.rs).

import base64
import os
import datetime
import re

_DURATION = re.compile(r"^([0-9]+)(ms|s|m|h|d)?$")
_RESERVED = {"order", "endpoint", "integration", "sync", "webhook"}


def _short(value):
    """A duration like the one generated, under a minute."""
    m = _DURATION.match(value) if isinstance(value, str) else None
    if not m:
        return value
    return f"{int(m.group(1)) % 60}s"


def _without_nul(value):
    """Postgres stores no NUL character; free-form keys and values the schema cannot constrain
    (metadata keys, a JSON Schema's contents) are refused with one (tests/it/api_errors.rs)."""
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    return value


def _repair_endpoint(body, ctx_now, create):
    # Positive cases create `http` endpoints, so later updates may change their `url`: a
    # `config` is for the other kinds, whose settings (templates that parse, an SMTP or HTTP
    # integration of the tenant, broker URLs) tests/it/destinations.rs and brokers.rs cover.
    body.pop("config", None)
    if create:
        body["kind"] = "http"
        body["url"] = "https://partner.example/hooks"
    elif "url" in body:
        body["url"] = "https://partner.example/hooks"
    if isinstance(body.get("event_types"), list):
        body["event_types"] = [
            t if isinstance(t, str) and t.endswith("*") else "order.created"
            for t in body["event_types"]
        ]
    if isinstance(body.get("retry_schedule"), list):
        body["retry_schedule"] = [_short(d) for d in body["retry_schedule"]]
    if isinstance(body.get("timeout"), str):
        body["timeout"] = "10s"
    if isinstance(body.get("headers"), dict):
        body["headers"] = {f"x-h{i}": v for i, v in enumerate(body["headers"].values())}


def _repair_integration(body):
    if isinstance(body.get("base_url"), str):
        body["base_url"] = "https://erp.example/api"
    if isinstance(body.get("config"), dict):
        for k in ("health_path", "api_key_header", "health_interval"):
            body["config"].pop(k, None)
    if isinstance(body.get("credentials"), dict):
        body["credentials"] = {f"c{i}": v for i, v in enumerate(body["credentials"].values())}
    if isinstance(body.get("inbound"), dict):
        # Secrets must fit their scheme and an emitted type be catalogued (tests/it/inbound.rs).
        body["inbound"] = {"scheme": "none", "action": {"type": "store"}}


def _repair_cursor(cursor):
    if isinstance(cursor, dict):
        # The script's integration is Postgres: no rowversion or Change Tracking; hash has no
        # column, the others need one.
        if cursor.get("strategy") in ("rowversion", "change_tracking"):
            cursor["strategy"] = "id"
        if cursor.get("strategy") == "hash":
            cursor.pop("column", None)
        elif not cursor.get("column"):
            cursor["column"] = "id"
        if cursor.get("strategy") != "timestamp":
            cursor.pop("lag_seconds", None)
            cursor.pop("lookback_seconds", None)
    return cursor


def _repair_sync(body, create):
    # An inbound sync of the script's SQL integration into the store (outbound and
    # bidirectional rules: tests/it/sync_api.rs); conflicts belong to bidirectional syncs.
    body.pop("conflict_strategy", None)
    source = body.get("source")
    if create:
        body["direction"] = "inbound"
        body["target"] = {"store": "switchyard"}
    if create and isinstance(source, dict):
        for field in ("store", "resource", "http", "cursor"):
            source.pop(field, None)
        source["integration_id"] = os.environ["SCHEMATHESIS_SQL_INTEGRATION"]
        source["table"] = source.get("table") or "equipment"
        key = source.get("key")
        source["key"] = list(dict.fromkeys(key))[:4] if isinstance(key, list) and key else ["id"]
    if create and body.get("mode") == "full":
        body["cursor"] = None
    elif create and body.get("mode") == "incremental" and not isinstance(body.get("cursor"), dict):
        body["cursor"] = {"strategy": "id", "column": "id"}
    elif not create:
        # Whether a cursor is allowed depends on the stored configuration's mode.
        body.pop("cursor", None)
    _repair_cursor(body.get("cursor"))
    if isinstance(body.get("schedule"), dict):
        # Exactly one of an interval and a cron, a time zone only with a cron.
        body["schedule"] = {"interval_seconds": 3600}
    if isinstance(body.get("mappings"), list):
        seen, kept = set(), []
        for m in body["mappings"]:
            if not isinstance(m, dict) or m.get("target") in seen:
                continue
            seen.add(m.get("target"))
            m["transform"] = None
            kept.append(m)
        body["mappings"] = kept


def _repair_order(body):
    for item in body.get("items") or []:
        if isinstance(item, dict):
            item["unit_price"] = min(item.get("unit_price", 0) or 0, 1000)
            for m in item.get("modifiers") or []:
                if isinstance(m, dict):
                    m["unit_price"] = min(m.get("unit_price", 0) or 0, 1000)
    body.pop("total", None)
    if "discount" in body:
        body["discount"] = 0


@schemathesis.hook("before_call")
def keep_the_sql_integration(ctx, case, **kwargs):
    """Sync configurations read the script's SQL integration: stateful runs that would delete
    or change it act on an unknown id instead (a 404)."""
    params = case.path_parameters or {}
    if (
        case.operation.path.startswith("/v1/integrations/{id}")
        and case.operation.method.upper() != "GET"
        and params.get("id") == os.environ.get("SCHEMATHESIS_SQL_INTEGRATION")
    ):
        params["id"] = str(uuid.uuid4())
        case.path_parameters = params


@schemathesis.hook("before_call")
def keep_semantic_rules(ctx, case, **kwargs):
    if not _positive(case) or not isinstance(case.body, dict):
        return
    case.body = _without_nul(case.body)
    body = case.body
    now = datetime.datetime.now(datetime.timezone.utc)
    method, path = case.operation.method.upper(), case.operation.path
    if path.endswith("/api-keys") and method == "POST" and body.get("expires_at") is not None:
        body["expires_at"] = (now + datetime.timedelta(days=1)).isoformat()
    if path == "/v1/orders" and method == "POST":
        _repair_order(body)
    if path == "/v1/events" and method == "POST":
        body["type"] = "schemathesis.event"
    if path.startswith("/v1/webhook-endpoints") and path.count("/") <= 3:
        _repair_endpoint(body, now, create=method == "POST" and path == "/v1/webhook-endpoints")
    if path.startswith("/v1/integrations") and path.count("/") <= 3:
        _repair_integration(body)
    if path == "/v1/event-types" and method == "POST" and isinstance(body.get("name"), str):
        if body["name"].split(".")[0] in _RESERVED and "." in body["name"]:
            body["name"] = "x" + body["name"]
    if path.startswith("/v1/event-types") and isinstance(body.get("schema"), dict):
        # A generated object is rarely a valid JSON Schema (tests/it/event_types.rs).
        body["schema"] = {"type": "object"}
    if path == "/v1/sync/configurations" and method == "POST":
        _repair_sync(body, create=True)
    if path == "/v1/sync/configurations/{id}" and method == "PATCH":
        _repair_sync(body, create=False)
    if path == "/v1/sync/conflicts/{id}/resolve":
        if body.get("resolution") == "merged":
            body["data"] = body.get("data") or {"name": "merged"}
        else:
            body.pop("data", None)
    if path.endswith("/secret/rotate"):
        if isinstance(body.get("grace_period"), str):
            body["grace_period"] = _short(body["grace_period"])
        if body.get("secret") is not None:
            body["secret"] = "whsec_" + base64.b64encode(b"s" * 32).decode()
    if path.endswith("/replays") and method == "POST":
        body["since"] = (now - datetime.timedelta(hours=1)).isoformat()
        body.pop("until", None)
