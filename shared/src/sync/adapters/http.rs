//! The `http` adapter: a collection of a REST or OData API under the integration's `base_url`,
//! read page by page (`http_pages.rs`), asked for changes since the cursor by a delta
//! parameter, written item by item with `If-Match` (ETags) and `If-None-Match: *` so a write
//! never overwrites a change it did not see. Every call carries the integration's credentials
//! and goes through the egress rules (guarded DNS, no redirects, links kept on the API's
//! origin); `429`/`503` answers are waited out as `Retry-After` says.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use futures::{StreamExt, future::BoxFuture, stream::BoxStream};
use reqwest::{Method, StatusCode, header::HeaderMap};
use serde_json::Value;
use sha2::{Digest, Sha256};
use url::Url;

use super::{
    SideInfo, Target,
    http_pages::{self, Delta},
};
use crate::{
    integrations::connection::{auth_headers, error_chain},
    net::{self, Egress},
    sync::{
        adapter::{
            Adapter, Described, Page, Position, Read, Row, SourceError, Write, WriteOp, Written,
            as_text,
        },
        config::{CursorStrategy, HttpSpec, SideSpec, WriteMethod},
        values,
    },
    webhooks::send::parse_retry_after,
};

/// Longest wait a `Retry-After` may ask for, and how often a throttled call is tried.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
const TRIES: usize = 6;
/// The field an item's ETag is kept in (OData's own name for it).
pub const ETAG: &str = "@odata.etag";
/// Most pages a count walks.
const COUNT_PAGES: usize = 1_000;

pub struct HttpAdapter {
    client: reqwest::Client,
    egress: Egress,
    base: Url,
    resource: String,
    spec: HttpSpec,
    headers: Vec<(String, String)>,
    info: SideInfo,
    described: Described,
}

/// Prepares calls to `side`'s resource (nothing is sent until the run reads).
pub fn connect(
    target: &Target<'_>,
    side: &SideSpec,
    info: SideInfo,
    egress: &Egress,
) -> Result<HttpAdapter, SourceError> {
    let base = target.base_url.ok_or("the integration has no `base_url`")?;
    let base = Url::parse(base).map_err(|e| format!("`base_url` is not a URL: {e}"))?;
    net::check_url(&base, egress).map_err(|e| format!("the address is not allowed: {e}"))?;
    let resource = side
        .resource
        .as_ref()
        .ok_or("an HTTP side needs a resource")?
        .to_string();
    let key_header = target.config.get("api_key_header").and_then(|v| v.as_str());
    Ok(HttpAdapter {
        client: net::outbound_client(
            egress.clone(),
            Duration::from_secs(10),
            Duration::from_secs(60),
        ),
        egress: egress.clone(),
        base,
        resource,
        spec: side.http.clone().unwrap_or_default(),
        headers: auth_headers(target.credentials, key_header),
        info,
        described: Described::default(),
    })
}

/// One answer of the API.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Option<Value>,
}

impl HttpAdapter {
    /// Sends a call (waiting out `429`/`503` as `Retry-After` says); any other status is
    /// returned for the caller to judge.
    async fn call(
        &self,
        method: Method,
        url: &Url,
        body: Option<&Row>,
        extra: &[(&str, String)],
    ) -> Result<Answer, SourceError> {
        net::check_url(url, &self.egress)
            .map_err(|e| format!("the address is not allowed: {e}"))?;
        let path = url.path().to_owned();
        for attempt in 1..=TRIES {
            let mut req = self
                .client
                .request(method.clone(), url.clone())
                .header("accept", "application/json");
            for (k, v) in &self.headers {
                req = req.header(k.as_str(), v.as_str());
            }
            for (k, v) in extra {
                req = req.header(*k, v.as_str());
            }
            if let Some(n) = http_pages::page_size(&self.spec).filter(|_| method == Method::GET) {
                req = req.header("prefer", format!("odata.maxpagesize={n}"));
            }
            if let Some(b) = body {
                req = req.json(b);
            }
            let resp = req
                .send()
                .await
                .map_err(|e| format!("{method} {path} failed: {}", error_chain(&e)))?;
            let status = resp.status();
            let headers = resp.headers().clone();
            if matches!(status.as_u16(), 429 | 503) && attempt < TRIES {
                let wait = headers
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| parse_retry_after(v, Utc::now()))
                    .unwrap_or(Duration::from_secs(1 << attempt.min(5)))
                    .min(MAX_RETRY_AFTER);
                tokio::time::sleep(wait).await;
                continue;
            }
            let bytes = resp
                .bytes()
                .await
                .map_err(|e| format!("{method} {path}: reading the answer failed: {e}"))?;
            let body = if bytes.is_empty() {
                None
            } else {
                serde_json::from_slice(&bytes).ok()
            };
            return Ok(Answer {
                status,
                headers,
                body,
            });
        }
        Err(format!("{method} {path} stayed throttled"))
    }

    /// A page of rows, its `Link` header and the server's clock.
    async fn page(&self, url: &Url) -> Result<(Value, HeaderMap), SourceError> {
        let a = self.call(Method::GET, url, None, &[]).await?;
        if !a.status.is_success() {
            return Err(format!("GET {} answered {}", url.path(), a.status));
        }
        let body = a
            .body
            .ok_or_else(|| format!("GET {} answered no JSON", url.path()))?;
        Ok((body, a.headers))
    }

    fn first_url(&self, page: &Page) -> Result<Url, SourceError> {
        let delta = match (page.position, page.cursor, page.strategy) {
            (
                Position::Since {
                    value: Some(v),
                    minus_seconds,
                },
                Some(column),
                Some(strategy),
            ) => Some(Delta {
                column,
                strategy,
                value: v.clone(),
                minus_seconds: *minus_seconds,
            }),
            (Position::After { value: Some(v), .. }, Some(column), Some(strategy)) => Some(Delta {
                column,
                strategy,
                value: v.clone(),
                minus_seconds: 0,
            }),
            _ => None,
        };
        http_pages::first_url(
            &self.base,
            &self.resource,
            &self.spec,
            page.key,
            delta.as_ref(),
        )
    }

    /// Whether a row's cursor value is at or past the watermark (left for the next run).
    fn beyond(page: &Page, row: &Row) -> bool {
        let (Some(c), Some(w)) = (page.cursor, page.watermark) else {
            return false;
        };
        let Some(v) = row.get(c).and_then(as_text) else {
            return false;
        };
        match (values::instant(&v), values::instant(w)) {
            (Some(v), Some(w)) => v >= w,
            _ => match (v.parse::<f64>(), w.parse::<f64>()) {
                (Ok(v), Ok(w)) => v > w,
                _ => false,
            },
        }
    }

    fn item(&self, key: &[String]) -> Result<Url, SourceError> {
        http_pages::item_url(&self.base, &self.resource, &self.spec, key)
    }

    /// The item's JSON (with its ETag kept in [`ETAG`]).
    fn with_etag(body: Option<Value>, headers: &HeaderMap) -> Option<Row> {
        let mut row = match body {
            Some(Value::Object(m)) => m,
            _ => return None,
        };
        if !row.contains_key(ETAG)
            && let Some(etag) = headers.get("etag").and_then(|v| v.to_str().ok())
        {
            row.insert(ETAG.to_owned(), Value::String(etag.to_owned()));
        }
        Some(row)
    }

    /// An item by key (`None`: the API does not have it).
    async fn get_item(&self, key: &[String]) -> Result<Option<Row>, SourceError> {
        let Ok(url) = self.item(key) else {
            // A key no item can have.
            return Ok(None);
        };
        let a = self.call(Method::GET, &url, None, &[]).await?;
        match a.status.as_u16() {
            200..=299 => Ok(Self::with_etag(a.body, &a.headers)),
            404 | 410 => Ok(None),
            _ => Err(format!("GET {} answered {}", url.path(), a.status)),
        }
    }

    async fn write_one(&self, w: &Write) -> Result<Written, SourceError> {
        let item = match self.item(&w.key) {
            Ok(url) => url,
            Err(e) => return Ok(Written::Refused(e)),
        };
        let mut extra: Vec<(&str, String)> = Vec::new();
        if let Some(e) = &w.expected {
            extra.push(("if-match", e.clone()));
        }
        let (method, url, body) = match &w.op {
            WriteOp::Upsert(row) if !w.exists => {
                extra.retain(|(k, _)| *k != "if-match");
                match self.spec.create.unwrap_or(WriteMethod::Put) {
                    WriteMethod::Post => {
                        let resource = http_pages::resource_url(&self.base, &self.resource)?;
                        let id = Sha256::digest(
                            format!(
                                "{}|{}|{}",
                                self.resource,
                                w.key.join(","),
                                Value::Object(row.clone())
                            )
                            .as_bytes(),
                        );
                        extra.push(("idempotency-key", hex(&id[..16])));
                        (Method::POST, resource, Some(row.clone()))
                    }
                    _ => {
                        extra.push(("if-none-match", "*".to_owned()));
                        (Method::PUT, item, Some(row.clone()))
                    }
                }
            }
            WriteOp::Upsert(row) => {
                let m = match self.spec.update {
                    Some(WriteMethod::Patch) => Method::PATCH,
                    _ => Method::PUT,
                };
                (m, item, Some(row.clone()))
            }
            WriteOp::SoftDelete => {
                let t = self
                    .info
                    .tombstone
                    .clone()
                    .ok_or("soft deletes need the side's tombstone field")?;
                let mut row = Row::new();
                row.insert(t, Value::Bool(true));
                (Method::PATCH, item, Some(row))
            }
            WriteOp::Delete => (Method::DELETE, item, None),
        };
        let a = self
            .call(method.clone(), &url, body.as_ref(), &extra)
            .await?;
        let status = a.status.as_u16();
        Ok(match status {
            200..=299 => Written::Done {
                row: (method != Method::DELETE)
                    .then(|| Self::with_etag(a.body, &a.headers))
                    .flatten(),
            },
            404 | 410 if method == Method::DELETE => Written::Done { row: None },
            404 | 409 | 412 => Written::Changed,
            400 | 422 => {
                let why = a
                    .body
                    .map(|b| b.to_string())
                    .unwrap_or_default()
                    .chars()
                    .take(300)
                    .collect::<String>();
                Written::Refused(format!("{method} {} answered {status}: {why}", url.path()))
            }
            _ => return Err(format!("{method} {} answered {}", url.path(), a.status)),
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Adapter for HttpAdapter {
    fn describe(&self) -> &Described {
        &self.described
    }

    fn watermark<'a>(
        &'a mut self,
        _column: Option<&'a str>,
        strategy: CursorStrategy,
        lag_seconds: i64,
    ) -> BoxFuture<'a, Result<Option<String>, SourceError>> {
        Box::pin(async move {
            if strategy != CursorStrategy::Timestamp {
                return Ok(None);
            }
            // The API's clock, from its `Date` header: never this worker's.
            let url = http_pages::resource_url(&self.base, &self.resource)?;
            let (_, headers) = self.page(&url).await?;
            let date = headers
                .get("date")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| DateTime::parse_from_rfc2822(v).ok())
                .ok_or("the API answered without a `Date` header: its clock is unknown")?;
            let at = date.with_timezone(&Utc) - chrono::Duration::seconds(lag_seconds);
            Ok(Some(at.to_rfc3339_opts(SecondsFormat::AutoSi, true)))
        })
    }

    fn count<'a>(&'a mut self, page: &'a Page<'a>) -> BoxFuture<'a, Result<i64, SourceError>> {
        Box::pin(async move {
            let mut url = Some(self.first_url(page)?);
            let mut n = 0;
            for _ in 0..COUNT_PAGES {
                let Some(u) = url.take() else { break };
                let (body, headers) = self.page(&u).await?;
                if let Some(total) = body.get("@odata.count").and_then(Value::as_i64) {
                    return Ok(total);
                }
                let rows = http_pages::items(&body, self.spec.items.as_deref())?;
                n += rows.iter().filter(|r| !Self::beyond(page, r)).count() as i64;
                let link = headers.get("link").and_then(|v| v.to_str().ok());
                url = http_pages::next_page(&self.spec, &self.base, &u, &body, link, rows.len())?;
            }
            Ok(n)
        })
    }

    fn stream<'a>(&'a mut self, page: &'a Page<'a>) -> BoxStream<'a, Result<Read, SourceError>> {
        let (start, skip) = match page.position {
            Position::Page { url, skip } => match Url::parse(url) {
                Ok(u) if http_pages::same_origin(&self.base, &u) => (Ok(u), *skip as usize),
                _ => (
                    Err("the checkpoint's page is not on the API's origin".to_owned()),
                    0,
                ),
            },
            _ => (self.first_url(page), 0),
        };
        let this: &'a HttpAdapter = self;
        struct State {
            next: Option<Url>,
            skip: usize,
            buffered: std::collections::VecDeque<Read>,
            /// The last page's body: an API that ignores the page or offset asked for (or
            /// clamps it to its last page) answers the same page again, forever.
            last: Option<Value>,
        }
        let first = match start {
            Ok(u) => u,
            Err(e) => return futures::stream::once(async move { Err(e) }).boxed(),
        };
        let state = State {
            next: Some(first),
            skip,
            buffered: Default::default(),
            last: None,
        };
        futures::stream::try_unfold(state, move |mut s| async move {
            loop {
                if let Some(read) = s.buffered.pop_front() {
                    return Ok(Some((read, s)));
                }
                let Some(url) = s.next.take() else {
                    return Ok(None);
                };
                let (body, headers) = this.page(&url).await?;
                let rows = http_pages::items(&body, this.spec.items.as_deref())?;
                if !rows.is_empty() && s.last.as_ref() == Some(&body) {
                    return Err(
                        "the API answered the next page with the same rows as the page \
                                before: its pagination does not move on (does it ignore the \
                                page or offset parameter, or repeat its last page?)"
                            .to_owned(),
                    );
                }
                let link = headers.get("link").and_then(|v| v.to_str().ok());
                s.next =
                    http_pages::next_page(&this.spec, &this.base, &url, &body, link, rows.len())?;
                s.last = Some(body);
                let n = rows.len();
                for (i, row) in rows
                    .into_iter()
                    .enumerate()
                    .skip(std::mem::take(&mut s.skip))
                {
                    if Self::beyond(page, &row) {
                        continue;
                    }
                    // OData deltas mark removed entities.
                    let deleted =
                        row.contains_key("@removed") || row.contains_key("@odata.removed");
                    let after = if i + 1 == n {
                        s.next.as_ref().map(|u| Position::Page {
                            url: u.to_string(),
                            skip: 0,
                        })
                    } else {
                        None
                    };
                    s.buffered.push_back(Read {
                        row,
                        deleted,
                        after: Some(after.unwrap_or(Position::Page {
                            url: url.to_string(),
                            skip: i as u64 + 1,
                        })),
                    });
                }
            }
        })
        .boxed()
    }

    fn read<'a>(&'a mut self, page: &'a Page<'a>) -> BoxFuture<'a, Result<Vec<Row>, SourceError>> {
        Box::pin(async move {
            let limit = page.limit.unwrap_or(i64::MAX) as usize;
            let rows: Vec<Result<Read, SourceError>> =
                self.stream(page).take(limit).collect().await;
            rows.into_iter().map(|r| r.map(|r| r.row)).collect()
        })
    }

    fn fetch<'a>(
        &'a mut self,
        keys: &'a [Vec<String>],
    ) -> BoxFuture<'a, Result<Vec<Row>, SourceError>> {
        Box::pin(async move {
            let mut out = Vec::with_capacity(keys.len());
            for chunk in keys.chunks(8) {
                let found = futures::future::join_all(chunk.iter().map(|k| self.get_item(k))).await;
                for row in found {
                    out.extend(row?);
                }
            }
            Ok(out)
        })
    }

    fn write<'a>(
        &'a mut self,
        writes: &'a [Write],
    ) -> BoxFuture<'a, Result<Vec<Written>, SourceError>> {
        Box::pin(async move {
            let mut out = Vec::with_capacity(writes.len());
            for w in writes {
                out.push(self.write_one(w).await?);
            }
            Ok(out)
        })
    }

    fn version_of(&self, row: &Row) -> Option<String> {
        row.get(ETAG).and_then(Value::as_str).map(str::to_owned)
    }

    fn check_writable<'a>(
        &'a mut self,
        _fields: &'a [String],
    ) -> BoxFuture<'a, Result<(), SourceError>> {
        Box::pin(async { Ok(()) })
    }
}
