//! Partner orders. Creating one writes the order, its `order.created` event and the event's
//! job in one transaction; the worker fans the event out to webhooks.

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgPool, types::Json};
use uuid::Uuid;

use crate::{
    crypto::Keyring,
    error::{Error, Result, is_unique_violation},
    idempotency::Claim,
    jobs::{self, NewJob, insert_jobs_sql},
    queue::{JobTask, ORDER_EVENTS},
};

/// Attempts of an order-event fan-out: it only touches Postgres, so it fails only while
/// Postgres is unreachable; the cap exists to stop a poison event looping forever.
pub const EVENT_MAX_ATTEMPTS: i32 = 50;

#[derive(Clone, Debug, Deserialize, poem_openapi::Object)]
#[serde(deny_unknown_fields)]
pub struct CreateOrder {
    /// The partner's own id of the order; unique per tenant.
    pub external_id: String,
    /// ISO 4217 currency code of every amount in the order.
    pub currency: String,
    /// 1 to 500 line items.
    pub items: Vec<OrderItemInput>,
    pub customer: Customer,
    pub delivery: Option<Delivery>,
    /// Free text, at most 2000 characters.
    pub notes: Option<String>,
}

#[derive(Clone, Debug, Deserialize, poem_openapi::Object)]
#[serde(deny_unknown_fields)]
pub struct OrderItemInput {
    pub sku: String,
    pub name: String,
    /// Whole units, 1 to 10000.
    pub quantity: i64,
    /// Price of one unit in minor units of the currency (cents), 0 or more.
    pub unit_price: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize, poem_openapi::Object)]
pub struct OrderItem {
    pub sku: String,
    pub name: String,
    pub quantity: i64,
    pub unit_price: i64,
    /// `quantity × unit_price`, computed by Switchyard.
    pub line_total: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize, poem_openapi::Object)]
#[serde(deny_unknown_fields)]
pub struct Customer {
    pub name: String,
    pub email: Option<String>,
    pub phone: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, poem_openapi::Object)]
#[serde(deny_unknown_fields)]
pub struct Delivery {
    /// Delivery address as one text block.
    pub address: String,
    pub instructions: Option<String>,
    /// When the customer wants the order delivered.
    pub scheduled_at: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, Serialize, Deserialize, poem_openapi::Object)]
pub struct Order {
    pub id: Uuid,
    pub external_id: String,
    pub status: String,
    pub currency: String,
    pub items: Vec<OrderItem>,
    /// Sum of line totals, in minor units.
    pub subtotal: i64,
    /// Amount due, in minor units.
    pub total: i64,
    pub customer: Customer,
    pub delivery: Option<Delivery>,
    pub notes: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct OrderRow {
    id: Uuid,
    external_id: String,
    status: String,
    currency: String,
    items: Json<Vec<OrderItem>>,
    subtotal: i64,
    total: i64,
    customer: Json<Customer>,
    delivery: Option<Json<Delivery>>,
    notes: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<OrderRow> for Order {
    fn from(r: OrderRow) -> Self {
        Order {
            id: r.id,
            external_id: r.external_id,
            status: r.status,
            currency: r.currency,
            items: r.items.0,
            subtotal: r.subtotal,
            total: r.total,
            customer: r.customer.0,
            delivery: r.delivery.map(|d| d.0),
            notes: r.notes,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

const COLUMNS: &str = "id, external_id, status, currency, items, subtotal, total, customer, delivery, notes, created_at, updated_at";

fn text(param: &str, value: &str, max: usize) -> Result<String> {
    let v = value.trim();
    if v.is_empty() || v.chars().count() > max {
        return Err(Error::invalid(
            "parameter_invalid",
            param,
            format!("`{param}` must be 1 to {max} characters."),
        ));
    }
    Ok(v.to_owned())
}

fn optional_text(param: &str, value: Option<&str>, max: usize) -> Result<Option<String>> {
    value.map(|v| text(param, v, max)).transpose()
}

fn valid_email(e: &str) -> bool {
    let Some((local, domain)) = e.split_once('@') else {
        return false;
    };
    e.len() <= 254
        && !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains('@')
        && !e.chars().any(char::is_whitespace)
}

/// A validated order ready to insert, with server-side totals.
#[derive(Debug)]
struct ValidOrder {
    external_id: String,
    currency: String,
    items: Vec<OrderItem>,
    subtotal: i64,
    customer: Customer,
    delivery: Option<Delivery>,
    notes: Option<String>,
}

fn validate(input: CreateOrder) -> Result<ValidOrder> {
    let external_id = text("external_id", &input.external_id, 255)?;
    let currency = input.currency.trim().to_owned();
    if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(Error::invalid(
            "parameter_invalid",
            "currency",
            "`currency` must be an ISO 4217 code such as `USD`.",
        ));
    }
    if input.items.is_empty() || input.items.len() > 500 {
        return Err(Error::invalid(
            "parameter_invalid",
            "items",
            "`items` must hold 1 to 500 line items.",
        ));
    }
    let mut items = Vec::with_capacity(input.items.len());
    let mut subtotal: i64 = 0;
    for (i, it) in input.items.into_iter().enumerate() {
        let p = |f: &str| format!("items[{i}].{f}");
        let sku = text(&p("sku"), &it.sku, 100)?;
        let name = text(&p("name"), &it.name, 300)?;
        if !(1..=10_000).contains(&it.quantity) {
            return Err(Error::invalid(
                "parameter_invalid",
                p("quantity"),
                format!("`{}` must be between 1 and 10000.", p("quantity")),
            ));
        }
        if !(0..=1_000_000_000_000).contains(&it.unit_price) {
            return Err(Error::invalid(
                "parameter_invalid",
                p("unit_price"),
                format!(
                    "`{}` must be 0 or more minor units (at most 10^12).",
                    p("unit_price")
                ),
            ));
        }
        let line_total = it.quantity * it.unit_price;
        subtotal = subtotal.checked_add(line_total).ok_or_else(|| {
            Error::invalid(
                "parameter_invalid",
                "items",
                "The order total is too large.",
            )
        })?;
        items.push(OrderItem {
            sku,
            name,
            quantity: it.quantity,
            unit_price: it.unit_price,
            line_total,
        });
    }
    let c = input.customer;
    let email = optional_text("customer.email", c.email.as_deref(), 254)?;
    if email.as_deref().is_some_and(|e| !valid_email(e)) {
        return Err(Error::invalid(
            "parameter_invalid",
            "customer.email",
            "`customer.email` is not an email address.",
        ));
    }
    let customer = Customer {
        name: text("customer.name", &c.name, 200)?,
        email,
        phone: optional_text("customer.phone", c.phone.as_deref(), 40)?,
    };
    let delivery = match input.delivery {
        None => None,
        Some(d) => Some(Delivery {
            address: text("delivery.address", &d.address, 1000)?,
            instructions: optional_text("delivery.instructions", d.instructions.as_deref(), 1000)?,
            scheduled_at: d.scheduled_at,
        }),
    };
    Ok(ValidOrder {
        external_id,
        currency,
        items,
        subtotal,
        customer,
        delivery,
        notes: optional_text("notes", input.notes.as_deref(), 2000)?,
    })
}

/// Validates and stores a new order with its `order.created` event and the event's job, in one
/// statement (atomic: a duplicate `external_id` writes nothing). Returns the order and the
/// event's task to push after commit.
///
/// With an idempotency `claim`, the `201` body is recorded (encrypted) in the same statement.
pub async fn create(
    pool: &PgPool,
    keyring: &Keyring,
    tenant_id: Uuid,
    input: CreateOrder,
    claim: Option<&Claim>,
) -> Result<(Order, JobTask)> {
    let v = validate(input)?;
    // Postgres keeps microseconds: the response and the event must match what GET returns.
    let now = Utc::now().trunc_subsecs(6);
    let order = Order {
        id: Uuid::now_v7(),
        external_id: v.external_id,
        status: "received".to_owned(),
        currency: v.currency,
        items: v.items,
        subtotal: v.subtotal,
        total: v.subtotal,
        customer: v.customer,
        delivery: v.delivery,
        notes: v.notes,
        created_at: now,
        updated_at: now,
    };
    let event_id = Uuid::now_v7();
    let job = NewJob::new(ORDER_EVENTS, tenant_id, event_id, EVENT_MAX_ATTEMPTS);
    let query = sqlx::query(concat!(
        "WITH j AS (",
        insert_jobs_sql!(),
        "), o AS (
            INSERT INTO orders (id, tenant_id, external_id, status, currency, items, subtotal,
                                total, customer, delivery, notes, created_at, updated_at)
            VALUES ($6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $17))
         , e AS (
            INSERT INTO order_events (id, tenant_id, order_id, seq, type, data, created_at)
            VALUES ($18, $7, $6, 1, 'order.created', $19, $17))
         UPDATE idempotency_keys
            SET state = 'finished', response_status = 201,
                response_content_type = 'application/json', response_body = $20,
                response_key_id = $24
          WHERE tenant_id = $7 AND mode = $21 AND key = $22 AND claim_id = $23"
    ));
    let sealed = match claim {
        Some(c) => {
            let body = serde_json::to_vec(&order).map_err(|e| Error::Internal(e.into()))?;
            let (key_id, sealed) = c.seal(keyring, &body);
            Some((sealed, key_id))
        }
        None => None,
    };
    jobs::bind_insert(query, std::slice::from_ref(&job))
        .bind(order.id)
        .bind(tenant_id)
        .bind(&order.external_id)
        .bind(&order.status)
        .bind(&order.currency)
        .bind(Json(&order.items))
        .bind(order.subtotal)
        .bind(order.total)
        .bind(Json(&order.customer))
        .bind(order.delivery.as_ref().map(Json))
        .bind(&order.notes)
        .bind(now)
        .bind(event_id)
        .bind(Json(&order))
        .bind(sealed.as_ref().map(|s| &s.0))
        .bind(claim.map(|c| c.mode.as_str()))
        .bind(claim.map(|c| c.key.as_str()))
        .bind(claim.map(|c| c.claim_id))
        .bind(sealed.as_ref().map(|s| &s.1))
        .execute(pool)
        .await
        .map_err(|e| {
            if is_unique_violation(&e, "orders_tenant_id_external_id_key") {
                Error::conflict(
                    "order_exists",
                    Some("external_id"),
                    format!(
                        "An order with external_id `{}` already exists.",
                        order.external_id
                    ),
                )
            } else {
                e.into()
            }
        })?;
    Ok((order, job.task()))
}

pub async fn get(pool: &PgPool, tenant_id: Uuid, id: Uuid) -> Result<Order> {
    sqlx::query_as::<_, OrderRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM orders WHERE tenant_id = $1 AND id = $2"
    )))
    .bind(tenant_id)
    .bind(id)
    .fetch_optional(pool)
    .await?
    .map(Order::from)
    .ok_or_else(|| Error::not_found("order"))
}

/// An order event as the fan-out reads it.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct OrderEvent {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub order_id: Uuid,
    pub r#type: String,
    pub data: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CreateOrder {
        CreateOrder {
            external_id: "ext-1".into(),
            currency: "USD".into(),
            items: vec![
                OrderItemInput {
                    sku: "B1".into(),
                    name: "Burger".into(),
                    quantity: 2,
                    unit_price: 1250,
                },
                OrderItemInput {
                    sku: "F1".into(),
                    name: "Fries".into(),
                    quantity: 1,
                    unit_price: 399,
                },
            ],
            customer: Customer {
                name: "Ada".into(),
                email: Some("ada@example.com".into()),
                phone: None,
            },
            delivery: None,
            notes: None,
        }
    }

    fn param_of(e: Error) -> String {
        match e {
            Error::Invalid { param, .. } => param.unwrap(),
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn totals_are_computed_server_side() {
        let v = validate(sample()).unwrap();
        assert_eq!(v.subtotal, 2 * 1250 + 399);
        assert_eq!(v.items[0].line_total, 2500);
    }

    #[test]
    fn invalid_fields_are_named() {
        let mut o = sample();
        o.items[1].quantity = 0;
        assert_eq!(param_of(validate(o).unwrap_err()), "items[1].quantity");
        let mut o = sample();
        o.currency = "usd".into();
        assert_eq!(param_of(validate(o).unwrap_err()), "currency");
        let mut o = sample();
        o.customer.email = Some("not-an-email".into());
        assert_eq!(param_of(validate(o).unwrap_err()), "customer.email");
        let mut o = sample();
        o.items.clear();
        assert_eq!(param_of(validate(o).unwrap_err()), "items");
        let mut o = sample();
        o.external_id = "  ".into();
        assert_eq!(param_of(validate(o).unwrap_err()), "external_id");
    }
}
