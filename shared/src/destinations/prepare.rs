//! A destination checked before it is saved: `url` or `config` as the kind takes them,
//! addresses vetted against the egress rules, integrations looked up, secrets split off.

use std::collections::BTreeMap;

use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use super::{
    DestinationKind, MAX_CONFIG_BYTES, Settings,
    config::{display, vet_broker, vet_http},
};
use crate::{
    error::{Error, Result},
    net::Egress,
    tenants::Scope,
};

/// An endpoint's destination, checked and ready to store: what the `url` column shows, the
/// public config and the secrets to seal.
#[derive(Clone, Debug)]
pub struct Prepared {
    pub kind: DestinationKind,
    /// For `http`, the vetted URL; otherwise where deliveries go, without secrets
    /// (`amqp://host:5672`, `mailto:ops@example.com`).
    pub url: String,
    pub public: Option<Value>,
    pub secrets: BTreeMap<String, String>,
}

/// Checks a destination before it is saved (outside the caller's transaction: it may wait
/// on DNS): `url` is only for `http`, `config` is for every other kind; URLs pass the egress
/// rules; an integration it names is the tenant's, in the same mode, of the right provider.
pub async fn prepare(
    pool: &PgPool,
    scope: Scope,
    egress: &Egress,
    kind: DestinationKind,
    url: Option<&str>,
    config: Option<BTreeMap<String, Value>>,
) -> Result<Prepared> {
    if kind == DestinationKind::Http {
        if config.is_some() {
            return Err(Error::invalid(
                "parameter_invalid",
                "config",
                "`config` is for destinations other than `http`; an `http` endpoint has a `url`.",
            ));
        }
        let Some(url) = url else {
            return Err(Error::invalid(
                "parameter_missing",
                "url",
                "An `http` endpoint needs a `url`.",
            ));
        };
        let vetted = crate::net::vet_url(url, egress, "url").await?;
        return Ok(Prepared {
            kind,
            url: vetted.to_string(),
            public: None,
            secrets: BTreeMap::new(),
        });
    }
    if url.is_some() {
        return Err(Error::invalid(
            "parameter_invalid",
            "url",
            format!(
                "A `{}` endpoint takes its address in `config`, not `url`.",
                kind.as_str()
            ),
        ));
    }
    let Some(config) = config else {
        return Err(Error::invalid(
            "parameter_missing",
            "config",
            format!("A `{}` endpoint needs a `config`.", kind.as_str()),
        ));
    };
    if config.len() > 50 {
        return Err(Error::invalid(
            "parameter_invalid",
            "config",
            "`config` has at most 50 fields.",
        ));
    }
    let config = Value::Object(config.into_iter().collect());
    if config.to_string().len() > MAX_CONFIG_BYTES {
        return Err(Error::invalid(
            "parameter_invalid",
            "config",
            format!("`config` is larger than {MAX_CONFIG_BYTES} bytes."),
        ));
    }
    let mut settings = Settings::parse(kind, config)?;
    settings.check()?;
    // Webhook URLs are stored as parsed, so the form an error message quotes is the form
    // redacted from attempt logs.
    let url = match &mut settings {
        Settings::Http => unreachable!("handled above"),
        Settings::Slack(c) => match &mut c.webhook_url {
            Some(u) => {
                let vetted = vet_http("webhook_url", u, egress).await?;
                *u = vetted.to_string();
                display(&vetted) + "/…"
            }
            None => format!("slack:{}", c.channel.as_deref().unwrap_or_default()),
        },
        Settings::Discord(c) => {
            let vetted = vet_http("webhook_url", &c.webhook_url, egress).await?;
            c.webhook_url = vetted.to_string();
            display(&vetted) + "/…"
        }
        Settings::Email(c) => {
            integration(pool, scope, "email", c.integration_id, &["smtp"]).await?;
            format!("mailto:{}", c.to.join(","))
        }
        Settings::Rabbitmq(c) => {
            display(&vet_broker("url", &c.url, &["amqp", "amqps"], egress).await?)
        }
        Settings::Nats(c) => display(&vet_broker("url", &c.url, &["nats", "tls"], egress).await?),
        Settings::HttpAction(c) => {
            let base = integration(pool, scope, "http_action", c.integration_id, &[]).await?;
            let Some(base) = base else {
                return Err(Error::invalid(
                    "parameter_invalid",
                    "config.integration_id",
                    "The integration has no `base_url` to call.",
                ));
            };
            format!(
                "{} {}{}",
                c.method.as_str(),
                base.trim_end_matches('/'),
                c.path
            )
        }
    };
    let (public, secrets) = settings.split();
    Ok(Prepared {
        kind,
        url,
        public: Some(public),
        secrets,
    })
}

/// Checks that the integration exists for the scope and speaks one of `providers` (any HTTP
/// provider when empty); returns its `base_url`.
async fn integration(
    pool: &PgPool,
    scope: Scope,
    kind: &str,
    id: Uuid,
    providers: &[&str],
) -> Result<Option<String>> {
    let row: Option<(String, Option<String>)> = sqlx::query_as(
        "SELECT provider, base_url FROM integrations
          WHERE tenant_id = $1 AND mode = $2 AND id = $3 AND deleted_at IS NULL",
    )
    .bind(scope.tenant_id)
    .bind(scope.mode.as_str())
    .bind(id)
    .fetch_optional(pool)
    .await?;
    let param = "config.integration_id";
    let Some((provider, base_url)) = row else {
        return Err(Error::invalid(
            "parameter_invalid",
            param,
            "No such integration in this mode.",
        ));
    };
    let sql = ["postgres", "mysql", "mssql", "smtp"];
    let fits = if providers.is_empty() {
        !sql.contains(&provider.as_str())
    } else {
        providers.contains(&provider.as_str())
    };
    if !fits {
        return Err(Error::invalid(
            "parameter_invalid",
            param,
            format!("A `{kind}` destination cannot use a `{provider}` integration."),
        ));
    }
    Ok(base_url)
}
