//! How an HTTP resource is paged and addressed, as pure functions of URLs and bodies (the I/O
//! is in `http.rs`): the first page's URL with its delta filter, where a page's rows are, the
//! next page (OData `@odata.nextLink`/`__next`, the `Link` header, a cursor token, page numbers
//! or offsets), and an item's URL for writes. Links an API returns must stay on its origin.

use chrono::SecondsFormat;
use serde_json::Value;
use url::Url;

use crate::sync::{
    adapter::Row,
    config::{CursorStrategy, DeltaStyle, HttpSpec, Pagination},
    values,
};

/// Rows asked for per page when paging by number or offset without a `page_size`.
pub const DEFAULT_PAGE_SIZE: i64 = 100;

/// Where a read starts: the cursor's value (less a lookback for times) as the delta filter.
pub struct Delta<'a> {
    pub column: &'a str,
    pub strategy: CursorStrategy,
    pub value: String,
    pub minus_seconds: i64,
}

fn pagination(spec: &HttpSpec) -> Pagination {
    spec.pagination.unwrap_or(Pagination::NextLink)
}

pub fn page_size(spec: &HttpSpec) -> Option<i64> {
    match (spec.page_size, pagination(spec)) {
        (Some(n), _) => Some(n.get()),
        (None, Pagination::Page | Pagination::Offset) => Some(DEFAULT_PAGE_SIZE),
        (None, _) => None,
    }
}

/// The collection's URL under `base`.
pub fn resource_url(base: &Url, resource: &str) -> Result<Url, String> {
    let joined = format!("{}{}", base.as_str().trim_end_matches('/'), resource);
    Url::parse(&joined).map_err(|e| format!("`base_url` + `resource` is not a URL: {e}"))
}

/// The first page of a read from `delta` (or from the start).
pub fn first_url(
    base: &Url,
    resource: &str,
    spec: &HttpSpec,
    key: &[String],
    delta: Option<&Delta>,
) -> Result<Url, String> {
    let mut url = resource_url(base, resource)?;
    {
        let mut q = url.query_pairs_mut();
        if let (Some(n), Some(p)) = (page_size(spec), page_size_param(spec)) {
            q.append_pair(p, &n.to_string());
        }
        match pagination(spec) {
            Pagination::Page => {
                q.append_pair(spec.page_param.as_deref().unwrap_or("page"), "1");
            }
            Pagination::Offset => {
                q.append_pair(spec.page_param.as_deref().unwrap_or("offset"), "0");
            }
            _ => {}
        }
        if let Some(d) = delta {
            let value = delta_value(d);
            match spec.delta.unwrap_or(DeltaStyle::Param) {
                DeltaStyle::Param => {
                    let p = spec.delta_param.as_deref().unwrap_or("updated_since");
                    q.append_pair(p, &value);
                }
                DeltaStyle::Odata => {
                    q.append_pair(
                        "$filter",
                        &format!("{} ge {}", d.column, odata_literal(&value, d.strategy)),
                    );
                }
            }
        }
        if let (Some(DeltaStyle::Odata), Some(d)) = (spec.delta, delta) {
            let mut order = vec![format!("{} asc", d.column)];
            order.extend(key.iter().map(|k| format!("{k} asc")));
            q.append_pair("$orderby", &order.join(","));
        }
    }
    if url.query() == Some("") {
        url.set_query(None);
    }
    Ok(url)
}

fn page_size_param(spec: &HttpSpec) -> Option<&str> {
    match (&spec.page_size_param, pagination(spec)) {
        (Some(p), _) => Some(p.as_str()),
        // Server-driven pages take the size as a `Prefer` hint, not a parameter (OData's
        // `$top` would cap the whole read).
        (None, Pagination::NextLink) => None,
        (None, _) => Some("limit"),
    }
}

/// The delta's lower bound as text: a time less the lookback (RFC 3339, UTC), or the value.
fn delta_value(d: &Delta) -> String {
    match (d.strategy, values::instant(&d.value)) {
        (CursorStrategy::Timestamp, Some(t)) => (t - chrono::Duration::seconds(d.minus_seconds))
            .to_rfc3339_opts(SecondsFormat::AutoSi, true),
        _ => d.value.clone(),
    }
}

/// A value as an OData v4 literal: times and numbers bare, text quoted.
fn odata_literal(value: &str, strategy: CursorStrategy) -> String {
    if strategy == CursorStrategy::Timestamp || value.parse::<f64>().is_ok() {
        value.to_owned()
    } else {
        format!("'{}'", value.replace('\'', "''"))
    }
}

/// A page's rows: at `pointer`, or the body when it is an array, or the first of `/value`,
/// `/data`, `/items`, `/results`, `/d/results`.
pub fn items(body: &Value, pointer: Option<&str>) -> Result<Vec<Row>, String> {
    let array = match pointer {
        Some(p) => body.pointer(p),
        None if body.is_array() => Some(body),
        None => ["/value", "/data", "/items", "/results", "/d/results"]
            .iter()
            .find_map(|p| body.pointer(p).filter(|v| v.is_array())),
    };
    let Some(Value::Array(rows)) = array else {
        return Err(match pointer {
            Some(p) => format!("the response has no array at `{p}`"),
            None => "the response has no rows (an array, or `value`, `data`, `items`, `results`; \
                     set `http.items`)"
                .to_owned(),
        });
    };
    rows.iter()
        .map(|r| match r {
            Value::Object(m) => Ok(m.clone()),
            _ => Err("a row of the response is not a JSON object".to_owned()),
        })
        .collect()
}

/// The `rel="next"` target of a `Link` header.
pub fn link_next(header: &str) -> Option<String> {
    header.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        params
            .split(';')
            .any(|p| {
                let p = p.trim().to_ascii_lowercase();
                p == "rel=\"next\"" || p == "rel=next"
            })
            .then(|| target.to_owned())
    })
}

/// The next page after `current`, whose body and `Link` header are given, holding `n` rows
/// (`None`: the read is complete).
pub fn next_page(
    spec: &HttpSpec,
    base: &Url,
    current: &Url,
    body: &Value,
    link: Option<&str>,
    n: usize,
) -> Result<Option<Url>, String> {
    let next = match pagination(spec) {
        Pagination::NextLink => {
            let in_body = [
                "/@odata.nextLink",
                "/odata.nextLink",
                "/d/__next",
                "/__next",
                "/next",
            ]
            .iter()
            .find_map(|p| body.pointer(p).and_then(Value::as_str))
            .map(str::to_owned);
            match in_body.or_else(|| link.and_then(link_next)) {
                Some(next) => current
                    .join(&next)
                    .map_err(|e| format!("the next page's link is not a URL: {e}"))?,
                None => return Ok(None),
            }
        }
        Pagination::Cursor => {
            let pointer = spec.next_cursor.as_deref().unwrap_or("/next_cursor");
            let token = match body.pointer(pointer) {
                Some(Value::String(s)) if !s.is_empty() => s.clone(),
                Some(Value::Number(n)) => n.to_string(),
                _ => return Ok(None),
            };
            let param = spec.cursor_param.as_deref().unwrap_or("cursor");
            with_param(current, param, &token)
        }
        Pagination::Page | Pagination::Offset => {
            // Only an empty page ends the read: a server may cap its pages below the size
            // asked for, and a short page taken for the last would cut the read short (and
            // a full run would take the rest for deleted).
            if n == 0 {
                return Ok(None);
            }
            let offset = pagination(spec) == Pagination::Offset;
            let param =
                spec.page_param
                    .as_deref()
                    .unwrap_or(if offset { "offset" } else { "page" });
            let now: i64 = current
                .query_pairs()
                .find(|(k, _)| k == param)
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(if offset { 0 } else { 1 });
            let next = if offset { now + n as i64 } else { now + 1 };
            with_param(current, param, &next.to_string())
        }
    };
    if !same_origin(base, &next) {
        return Err(format!(
            "the next page's link leaves the integration's base_url ({})",
            next.origin().ascii_serialization()
        ));
    }
    Ok(Some(next))
}

/// `url` with `param` set to `value` (replacing it).
fn with_param(url: &Url, param: &str, value: &str) -> Url {
    let mut out = url.clone();
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| k != param)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    {
        let mut q = out.query_pairs_mut();
        q.clear();
        for (k, v) in &pairs {
            q.append_pair(k, v);
        }
        q.append_pair(param, value);
    }
    out
}

pub fn same_origin(a: &Url, b: &Url) -> bool {
    a.origin() == b.origin()
}

/// An item's URL: `item_path` (default `{resource}/{key}`) with the key URL-encoded (several
/// key values joined by `,`).
pub fn item_url(
    base: &Url,
    resource: &str,
    spec: &HttpSpec,
    key: &[String],
) -> Result<Url, String> {
    let encoded: Vec<String> = key
        .iter()
        .map(|k| {
            url::form_urlencoded::byte_serialize(k.as_bytes())
                .collect::<String>()
                .replace('+', "%20")
        })
        .collect();
    let template = spec.item_path.as_deref().unwrap_or("{resource}/{key}");
    let path = template
        .replace("{resource}", resource)
        .replace("{key}", &encoded.join(","));
    let url = resource_url(base, &path)?;
    if !same_origin(base, &url) {
        return Err("`item_path` leaves the integration's base_url".into());
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn spec(v: Value) -> HttpSpec {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn first_pages_carry_the_delta_and_the_page_size() {
        let base = Url::parse("https://erp.example/api/").unwrap();
        let d = Delta {
            column: "ModifiedAt",
            strategy: CursorStrategy::Timestamp,
            value: "2026-12-06T10:05:00+00:00".into(),
            minus_seconds: 300,
        };
        let odata = spec(json!({"delta": "odata", "page_size": 50}));
        assert_eq!(
            first_url(&base, "/Equipment", &odata, &["Id".into()], Some(&d))
                .unwrap()
                .as_str(),
            "https://erp.example/api/Equipment?%24filter=ModifiedAt+ge+2026-12-06T10%3A00%3A00Z&%24orderby=ModifiedAt+asc%2CId+asc"
        );
        let rest =
            spec(json!({"pagination": "page", "page_size": 20, "delta_param": "changed_after"}));
        assert_eq!(
            first_url(&base, "/items", &rest, &[], Some(&d))
                .unwrap()
                .as_str(),
            "https://erp.example/api/items?limit=20&page=1&changed_after=2026-12-06T10%3A00%3A00Z"
        );
        assert_eq!(
            first_url(&base, "/items", &HttpSpec::default(), &[], None)
                .unwrap()
                .as_str(),
            "https://erp.example/api/items"
        );
        let ids = Delta {
            column: "Id",
            strategy: CursorStrategy::Id,
            value: "A'1".into(),
            minus_seconds: 0,
        };
        assert!(
            first_url(&base, "/x", &odata, &[], Some(&ids))
                .unwrap()
                .as_str()
                .contains("Id+ge+%27A%27%271%27")
        );
    }

    #[test]
    fn pages_follow_links_tokens_numbers_and_offsets() {
        let base = Url::parse("https://erp.example").unwrap();
        let cur = Url::parse("https://erp.example/Equipment?$top=2").unwrap();
        let d = HttpSpec::default();
        let body = json!({"value": [], "@odata.nextLink": "Equipment?$skiptoken=abc"});
        assert_eq!(
            next_page(&d, &base, &cur, &body, None, 2)
                .unwrap()
                .unwrap()
                .as_str(),
            "https://erp.example/Equipment?$skiptoken=abc"
        );
        let v2 =
            json!({"d": {"results": [], "__next": "https://erp.example/Equipment?$skiptoken=2"}});
        assert!(next_page(&d, &base, &cur, &v2, None, 2).unwrap().is_some());
        assert_eq!(items(&v2, None).unwrap().len(), 0);
        let link = r#"<https://erp.example/items?page=3>; rel="next", <https://erp.example/items?page=9>; rel="last""#;
        assert_eq!(
            next_page(&d, &base, &cur, &json!([]), Some(link), 0)
                .unwrap()
                .unwrap()
                .as_str(),
            "https://erp.example/items?page=3"
        );
        assert!(
            next_page(&d, &base, &cur, &json!({"value": []}), None, 0)
                .unwrap()
                .is_none()
        );
        // A next link to another origin is refused.
        let away = json!({"@odata.nextLink": "https://evil.example/x"});
        assert!(next_page(&d, &base, &cur, &away, None, 1).is_err());
        let c = spec(json!({"pagination": "cursor", "next_cursor": "/meta/next"}));
        let body = json!({"data": [{}], "meta": {"next": "t2"}});
        assert_eq!(
            next_page(&c, &base, &cur, &body, None, 1)
                .unwrap()
                .unwrap()
                .as_str(),
            "https://erp.example/Equipment?%24top=2&cursor=t2"
        );
        assert!(
            next_page(&c, &base, &cur, &json!({"meta": {"next": null}}), None, 1)
                .unwrap()
                .is_none()
        );
        let p = spec(json!({"pagination": "page", "page_size": 2}));
        let cur = Url::parse("https://erp.example/items?limit=2&page=1").unwrap();
        assert_eq!(
            next_page(&p, &base, &cur, &json!([]), None, 2)
                .unwrap()
                .unwrap()
                .as_str(),
            "https://erp.example/items?limit=2&page=2"
        );
        // A short page (the server's cap may be below the size asked) is not the last; an
        // empty one is.
        assert_eq!(
            next_page(&p, &base, &cur, &json!([]), None, 1)
                .unwrap()
                .unwrap()
                .as_str(),
            "https://erp.example/items?limit=2&page=2"
        );
        assert!(
            next_page(&p, &base, &cur, &json!([]), None, 0)
                .unwrap()
                .is_none()
        );
        let o = spec(json!({"pagination": "offset", "page_size": 2, "page_param": "skip"}));
        let cur = Url::parse("https://erp.example/items?limit=2&skip=4").unwrap();
        assert_eq!(
            next_page(&o, &base, &cur, &json!([]), None, 2)
                .unwrap()
                .unwrap()
                .as_str(),
            "https://erp.example/items?limit=2&skip=6"
        );
    }

    #[test]
    fn rows_and_item_urls() {
        assert_eq!(items(&json!([{"a": 1}]), None).unwrap().len(), 1);
        assert_eq!(
            items(&json!({"data": [{"a": 1}, {"a": 2}]}), None)
                .unwrap()
                .len(),
            2
        );
        assert!(items(&json!({"rows": []}), None).is_err());
        assert_eq!(
            items(&json!({"rows": [{}]}), Some("/rows")).unwrap().len(),
            1
        );
        assert!(items(&json!([1]), None).is_err());
        let base = Url::parse("https://erp.example/api").unwrap();
        let odata = spec(json!({"item_path": "{resource}('{key}')"}));
        assert_eq!(
            item_url(&base, "/Equipment", &odata, &["A 1".into()])
                .unwrap()
                .as_str(),
            "https://erp.example/api/Equipment('A%201')"
        );
        assert_eq!(
            item_url(&base, "/items", &HttpSpec::default(), &["7".into()])
                .unwrap()
                .as_str(),
            "https://erp.example/api/items/7"
        );
        assert!(
            item_url(&base, "/items", &HttpSpec::default(), &["../../x".into()])
                .unwrap()
                .as_str()
                .contains("..%2F")
        );
    }
}
