//! A REST/OData ERP (the outside world): an equipment collection served three ways —
//! `/odata/Equipment` (OData v4: `$filter=ModifiedAt ge …`, `$orderby`, server-driven pages of
//! `Prefer: odata.maxpagesize` with `@odata.nextLink`/`$skiptoken`, `@odata.etag`),
//! `/api/items` (plain REST: `updated_since`, `limit`, pages linked by `Link: rel="next"`) and
//! `/api/feed` (cursor tokens) — with items at `/api/items/{id}` written by `PUT`/`PATCH`
//! under `If-Match` / `If-None-Match: *`. Every call needs `Authorization: Bearer <token>`;
//! the ERP can be told to answer `429 Retry-After: 1` a few times, or to change an item
//! behind the caller's back before its next write.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use chrono::{DateTime, SecondsFormat, Utc};
use poem::{Body, EndpointExt, Request, Response, Route, handler, http::StatusCode, web::Data};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

pub const TOKEN: &str = "erp-token-4711";

#[derive(Clone, Debug)]
pub struct Item {
    pub id: i64,
    pub name: String,
    pub qty: i64,
    pub modified_at: DateTime<Utc>,
    pub version: u64,
}

impl Item {
    fn etag(&self) -> String {
        format!("W/\"{}\"", self.version)
    }

    fn odata(&self) -> Value {
        json!({"Id": self.id, "Name": self.name, "Qty": self.qty,
               "ModifiedAt": stamp(self.modified_at), "@odata.etag": self.etag()})
    }

    fn rest(&self) -> Value {
        json!({"id": self.id, "name": self.name, "qty": self.qty,
               "updated_at": stamp(self.modified_at)})
    }
}

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// A request as the ERP saw it.
#[derive(Clone, Debug)]
pub struct Call {
    pub method: String,
    /// Path and query.
    pub uri: String,
    pub authorization: Option<String>,
    pub if_match: Option<String>,
    pub if_none_match: Option<String>,
    pub status: u16,
}

#[derive(Default)]
struct State {
    items: Mutex<BTreeMap<i64, Item>>,
    calls: Mutex<Vec<Call>>,
    throttle: AtomicUsize,
    meddle: Mutex<Option<i64>>,
    version: AtomicUsize,
}

pub struct RestErp {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    state: Arc<State>,
    stop: CancellationToken,
}

impl RestErp {
    pub async fn start() -> RestErp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State::default());
        let stop = crate::partner::serve(
            listener,
            Route::new().at("/*path", answer).data(state.clone()),
        );
        RestErp {
            url: format!("http://{addr}"),
            state,
            stop,
        }
    }

    /// Adds or replaces an item, stamped now.
    pub fn put(&self, id: i64, name: &str, qty: i64) {
        let version = self.state.version.fetch_add(1, Ordering::SeqCst) as u64 + 1;
        self.state.items.lock().unwrap().insert(
            id,
            Item {
                id,
                name: name.into(),
                qty,
                modified_at: Utc::now(),
                version,
            },
        );
    }

    pub fn get(&self, id: i64) -> Option<Item> {
        self.state.items.lock().unwrap().get(&id).cloned()
    }

    /// The next `n` calls answer `429 Retry-After: 1`.
    pub fn throttle(&self, n: usize) {
        self.state.throttle.store(n, Ordering::SeqCst);
    }

    /// Item `id` changes (as another user would change it) just before the next write to it.
    pub fn meddle_before_next_write(&self, id: i64) {
        *self.state.meddle.lock().unwrap() = Some(id);
    }

    pub fn calls(&self) -> Vec<Call> {
        self.state.calls.lock().unwrap().clone()
    }
}

impl Drop for RestErp {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn json_response(status: StatusCode, body: Value) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("date", httpdate(Utc::now()))
        .body(body.to_string())
}

fn httpdate(t: DateTime<Utc>) -> String {
    t.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

fn query(req: &Request) -> BTreeMap<String, String> {
    url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

#[handler]
async fn answer(req: &Request, body: Body, state: Data<&Arc<State>>) -> Response {
    let header = |n: &str| {
        req.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let mut call = Call {
        method: req.method().to_string(),
        uri: req.uri().to_string(),
        authorization: header("authorization"),
        if_match: header("if-match"),
        if_none_match: header("if-none-match"),
        status: 0,
    };
    let resp = respond(req, body, &state, &call).await;
    call.status = resp.status().as_u16();
    state.calls.lock().unwrap().push(call);
    resp
}

async fn respond(req: &Request, body: Body, state: &State, call: &Call) -> Response {
    if call.authorization.as_deref() != Some(&format!("Bearer {TOKEN}")) {
        return json_response(StatusCode::UNAUTHORIZED, json!({"error": "unauthorized"}));
    }
    if state
        .throttle
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        let mut r = json_response(StatusCode::TOO_MANY_REQUESTS, json!({"error": "slow down"}));
        r.headers_mut().insert("retry-after", "1".parse().unwrap());
        return r;
    }
    let path = req.uri().path().to_owned();
    let q = query(req);
    let since = |name: &str| {
        q.get(name)
            .and_then(|v| DateTime::parse_from_rfc3339(v).ok())
            .map(|t| t.with_timezone(&Utc))
    };
    let listed = |after: Option<DateTime<Utc>>| -> Vec<Item> {
        let mut items: Vec<Item> = state.items.lock().unwrap().values().cloned().collect();
        items.retain(|i| after.is_none_or(|a| i.modified_at >= a));
        items.sort_by_key(|i| (i.modified_at, i.id));
        items
    };
    match (req.method().as_str(), path.as_str()) {
        ("GET", "/odata/Equipment") => {
            // `$filter=ModifiedAt ge <time>`.
            let after = q.get("$filter").and_then(|f| {
                let t = f.strip_prefix("ModifiedAt ge ")?;
                DateTime::parse_from_rfc3339(t)
                    .ok()
                    .map(|t| t.with_timezone(&Utc))
            });
            let size: usize = header_size(req).unwrap_or(1000);
            let skip: usize = q
                .get("$skiptoken")
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let items = listed(after);
            let page: Vec<Value> = items
                .iter()
                .skip(skip)
                .take(size)
                .map(Item::odata)
                .collect();
            let mut body = json!({"@odata.context": "$metadata#Equipment", "value": page});
            if skip + size < items.len() {
                let mut next = url::form_urlencoded::Serializer::new(String::new());
                for (k, v) in q.iter().filter(|(k, _)| *k != "$skiptoken") {
                    next.append_pair(k, v);
                }
                next.append_pair("$skiptoken", &(skip + size).to_string());
                body["@odata.nextLink"] = json!(format!("Equipment?{}", next.finish()));
            }
            json_response(StatusCode::OK, body)
        }
        ("GET", "/api/items") => {
            let items = listed(since("updated_since"));
            // Like many APIs, it caps the page size: two items at most, whatever is asked.
            let limit: usize = q.get("limit").and_then(|s| s.parse().ok()).unwrap_or(100);
            let limit = limit.min(2);
            let offset: usize = q.get("offset").and_then(|s| s.parse().ok()).unwrap_or(0);
            let page: Vec<Value> = items
                .iter()
                .skip(offset)
                .take(limit)
                .map(Item::rest)
                .collect();
            let mut r = json_response(StatusCode::OK, Value::Array(page));
            if offset + limit < items.len() {
                let mut next = url::form_urlencoded::Serializer::new(String::new());
                for (k, v) in q.iter().filter(|(k, _)| *k != "offset") {
                    next.append_pair(k, v);
                }
                next.append_pair("offset", &(offset + limit).to_string());
                let link = format!("</api/items?{}>; rel=\"next\"", next.finish());
                r.headers_mut().insert("link", link.parse().unwrap());
            }
            r
        }
        ("GET", "/api/feed") => {
            let items = listed(since("updated_since"));
            let from: usize = q.get("cursor").and_then(|s| s.parse().ok()).unwrap_or(0);
            let page: Vec<Value> = items.iter().skip(from).take(2).map(Item::rest).collect();
            let next = (from + 2 < items.len()).then(|| (from + 2).to_string());
            json_response(StatusCode::OK, json!({"data": page, "next_cursor": next}))
        }
        (method, p) if p.starts_with("/api/items/") => {
            let Ok(id) = p["/api/items/".len()..].parse::<i64>() else {
                return json_response(StatusCode::NOT_FOUND, json!({}));
            };
            item(method, id, body, state, call).await
        }
        _ => json_response(StatusCode::NOT_FOUND, json!({"error": "no such resource"})),
    }
}

fn header_size(req: &Request) -> Option<usize> {
    let prefer = req.headers().get("prefer")?.to_str().ok()?;
    prefer.strip_prefix("odata.maxpagesize=")?.parse().ok()
}

async fn item(method: &str, id: i64, body: Body, state: &State, call: &Call) -> Response {
    if method != "GET" && *state.meddle.lock().unwrap() == Some(id) {
        *state.meddle.lock().unwrap() = None;
        let version = state.version.fetch_add(1, Ordering::SeqCst) as u64 + 1;
        if let Some(i) = state.items.lock().unwrap().get_mut(&id) {
            i.name = format!("{} (edited in the ERP)", i.name);
            i.modified_at = Utc::now();
            i.version = version;
        }
    }
    let current = state.items.lock().unwrap().get(&id).cloned();
    let with_etag = |status: StatusCode, i: &Item| {
        let mut r = json_response(status, i.rest());
        r.headers_mut().insert("etag", i.etag().parse().unwrap());
        r
    };
    if method == "GET" {
        return match current {
            Some(i) => with_etag(StatusCode::OK, &i),
            None => json_response(StatusCode::NOT_FOUND, json!({})),
        };
    }
    // Conditional writes.
    match (&current, &call.if_match, &call.if_none_match) {
        (Some(_), _, Some(star)) if star == "*" => {
            return json_response(StatusCode::PRECONDITION_FAILED, json!({"error": "exists"}));
        }
        (Some(i), Some(tag), _) if *tag != i.etag() => {
            return json_response(StatusCode::PRECONDITION_FAILED, json!({"error": "changed"}));
        }
        (None, Some(_), _) => return json_response(StatusCode::NOT_FOUND, json!({})),
        _ => {}
    }
    if method == "DELETE" {
        state.items.lock().unwrap().remove(&id);
        return Response::builder().status(StatusCode::NO_CONTENT).finish();
    }
    let Ok(fields) = body.into_json::<serde_json::Map<String, Value>>().await else {
        return json_response(StatusCode::BAD_REQUEST, json!({"error": "not JSON"}));
    };
    let (name, qty) = (fields.get("name"), fields.get("qty"));
    if method == "PUT"
        && (name.and_then(Value::as_str).is_none() || qty.and_then(Value::as_i64).is_none())
    {
        return json_response(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"error": "name and qty are required"}),
        );
    }
    let version = state.version.fetch_add(1, Ordering::SeqCst) as u64 + 1;
    let mut items = state.items.lock().unwrap();
    let i = items.entry(id).or_insert(Item {
        id,
        name: String::new(),
        qty: 0,
        modified_at: Utc::now(),
        version,
    });
    if let Some(n) = name.and_then(Value::as_str) {
        i.name = n.to_owned();
    }
    if let Some(n) = qty.and_then(Value::as_i64) {
        i.qty = n;
    }
    i.modified_at = Utc::now();
    i.version = version;
    let status = if current.is_some() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    with_etag(status, i)
}
