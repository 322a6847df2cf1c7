//! The domain/infrastructure error of the `shared` layer. The API maps it to HTTP exactly once
//! (`api::error`); the worker decides retry vs. give-up from it.

/// Errors of domain operations. Variants carry a stable `code` that becomes part of the API
/// contract, and the offending field where there is one.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is well-formed JSON but a value is missing or not acceptable.
    #[error("{detail}")]
    Invalid {
        code: &'static str,
        param: Option<String>,
        detail: String,
    },
    /// The resource does not exist for this tenant (foreign ids look exactly like missing ones).
    #[error("{detail}")]
    NotFound { code: &'static str, detail: String },
    /// The request conflicts with the current state (duplicate, illegal transition, …).
    #[error("{detail}")]
    Conflict {
        code: &'static str,
        param: Option<String>,
        detail: String,
    },
    /// Well-formed but cannot be processed as asked (an idempotency key reused with other
    /// parameters).
    #[error("{detail}")]
    Unprocessable {
        code: &'static str,
        param: Option<String>,
        detail: String,
    },
    /// No valid credentials.
    #[error("{detail}")]
    Unauthenticated { code: &'static str, detail: String },
    /// Valid credentials without the right to do this.
    #[error("{detail}")]
    Forbidden { code: &'static str, detail: String },
    /// A body of a type the operation does not take.
    #[error("{detail}")]
    UnsupportedMediaType { detail: String },
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("redis error: {0}")]
    Redis(#[from] redis::RedisError),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn invalid(
        code: &'static str,
        param: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        Error::Invalid {
            code,
            param: Some(param.into()),
            detail: detail.into(),
        }
    }

    pub fn not_found(what: &str) -> Self {
        Error::NotFound {
            code: "resource_not_found",
            detail: format!("No such {what}."),
        }
    }

    pub fn conflict(code: &'static str, param: Option<&str>, detail: impl Into<String>) -> Self {
        Error::Conflict {
            code,
            param: param.map(str::to_owned),
            detail: detail.into(),
        }
    }

    pub fn unauthenticated(code: &'static str, detail: impl Into<String>) -> Self {
        Error::Unauthenticated {
            code,
            detail: detail.into(),
        }
    }

    pub fn forbidden(code: &'static str, detail: impl Into<String>) -> Self {
        Error::Forbidden {
            code,
            detail: detail.into(),
        }
    }

    /// True when the failure is a store being unreachable rather than a bug: the caller may retry.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Error::Database(e) => is_db_unavailable(e),
            Error::Redis(_) => true,
            _ => false,
        }
    }
}

/// Failures of the database as a service (down, restarting, pool exhausted, its schema not in
/// place: a migration under way or the wrong database) as opposed to errors of one query.
pub fn is_db_unavailable(e: &sqlx::Error) -> bool {
    matches!(
        e,
        sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed
    ) || matches!(e, sqlx::Error::Database(d) if d.code().is_some_and(|c| {
        c.starts_with("57P") || c.starts_with("08") || c == "42P01"
    }))
}

/// True when `e` is a unique violation of the named constraint.
pub fn is_unique_violation(e: &sqlx::Error, constraint: &str) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.code().as_deref() == Some("23505") && d.constraint() == Some(constraint))
}
