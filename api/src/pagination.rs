//! Cursor pagination (`limit`, `starting_after`; newest first; `has_more`).

use poem::http::StatusCode;

use crate::error::ApiError;

pub const DEFAULT_LIMIT: i64 = 20;
pub const MAX_LIMIT: i64 = 100;

pub fn limit(requested: Option<i64>) -> Result<i64, ApiError> {
    match requested {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "parameter_invalid",
            format!("`limit` must be between 1 and {MAX_LIMIT}."),
        )
        .with_param("limit")),
    }
}

/// Splits a page fetched with `limit + 1` rows into the page and `has_more`.
pub fn page<T>(mut rows: Vec<T>, limit: i64) -> (Vec<T>, bool) {
    let has_more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    (rows, has_more)
}

/// Declares a list envelope `{data: [...], has_more}` for one item type.
macro_rules! list_type {
    ($name:ident, $item:ty) => {
        #[derive(serde::Serialize, poem_openapi::Object)]
        pub struct $name {
            pub data: Vec<$item>,
            /// True when more items follow; pass the last `id` as `starting_after`.
            pub has_more: bool,
        }

        impl $name {
            pub fn from_rows(rows: Vec<$item>, limit: i64) -> Self {
                let (data, has_more) = $crate::pagination::page(rows, limit);
                $name { data, has_more }
            }
        }
    };
}
pub(crate) use list_type;
