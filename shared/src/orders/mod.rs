//! Partner orders: validation with server-side totals ([`input`]), the status state machine,
//! changes ([`changes`]) and the order's history. Every change writes the order, its history
//! entry, its event in the outbox (`events`, keyed by the order) and the event's fan-out job in
//! one statement; the worker fans events out to webhooks, in order per order and endpoint.

pub mod changes;
pub mod dashboard;
pub mod feed;
pub mod input;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgPool, types::Json};
use uuid::Uuid;

pub use self::{
    changes::{change_status, create, update},
    input::{CancelOrder, ChangeStatus, CreateOrder, UpdateOrder},
};
use crate::{
    error::{Error, Result},
    tenants::Scope,
};

/// An order's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, poem_openapi::Enum)]
#[serde(rename_all = "snake_case")]
#[oai(rename_all = "snake_case")]
pub enum OrderStatus {
    Received,
    Confirmed,
    Preparing,
    Ready,
    OutForDelivery,
    Delivered,
    Completed,
    Cancelled,
    Rejected,
}

impl OrderStatus {
    /// Every status, in the order an order normally goes through them.
    pub const ALL: [OrderStatus; 9] = [
        OrderStatus::Received,
        OrderStatus::Confirmed,
        OrderStatus::Preparing,
        OrderStatus::Ready,
        OrderStatus::OutForDelivery,
        OrderStatus::Delivered,
        OrderStatus::Completed,
        OrderStatus::Cancelled,
        OrderStatus::Rejected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Received => "received",
            OrderStatus::Confirmed => "confirmed",
            OrderStatus::Preparing => "preparing",
            OrderStatus::Ready => "ready",
            OrderStatus::OutForDelivery => "out_for_delivery",
            OrderStatus::Delivered => "delivered",
            OrderStatus::Completed => "completed",
            OrderStatus::Cancelled => "cancelled",
            OrderStatus::Rejected => "rejected",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// The state machine: the statuses an order may move to from this one.
    pub fn next(self) -> &'static [OrderStatus] {
        use OrderStatus::*;
        match self {
            Received => &[Confirmed, Rejected, Cancelled],
            Confirmed => &[Preparing, Cancelled],
            Preparing => &[Ready, Cancelled],
            // Pickup orders complete straight from `ready`.
            Ready => &[OutForDelivery, Completed],
            OutForDelivery => &[Delivered],
            Delivered => &[Completed],
            Completed | Cancelled | Rejected => &[],
        }
    }

    pub fn is_final(self) -> bool {
        self.next().is_empty()
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, poem_openapi::Object)]
pub struct Modifier {
    pub name: String,
    pub quantity: i64,
    pub unit_price: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize, poem_openapi::Object)]
pub struct OrderItem {
    pub sku: String,
    pub name: String,
    pub quantity: i64,
    pub unit_price: i64,
    #[serde(default)]
    pub modifiers: Vec<Modifier>,
    /// `quantity × (unit_price + Σ modifier quantity × unit_price)`, computed by Switchyard.
    pub line_total: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize, poem_openapi::Object)]
pub struct Customer {
    pub name: String,
    #[oai(nullable)]
    pub email: Option<String>,
    #[oai(nullable)]
    pub phone: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, poem_openapi::Object)]
pub struct Delivery {
    /// Delivery address as one text block.
    pub address: String,
    #[oai(nullable)]
    pub instructions: Option<String>,
    /// When the customer wants the order delivered.
    #[oai(nullable)]
    pub scheduled_at: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, Serialize, Deserialize, poem_openapi::Object)]
pub struct Order {
    pub id: Uuid,
    /// `live` or `test` (the mode of the key that created it).
    pub mode: String,
    pub provider: String,
    pub external_id: String,
    /// One of `received`, `confirmed`, `preparing`, `ready`, `out_for_delivery`, `delivered`,
    /// `completed`, `cancelled`, `rejected`.
    pub status: String,
    pub currency: String,
    pub items: Vec<OrderItem>,
    /// Sum of line totals, in minor units.
    pub subtotal: i64,
    pub tax: i64,
    pub delivery_fee: i64,
    pub tip: i64,
    pub discount: i64,
    /// Amount due: `subtotal + tax + delivery_fee + tip − discount`.
    pub total: i64,
    pub customer: Customer,
    #[oai(nullable)]
    pub delivery: Option<Delivery>,
    #[oai(nullable)]
    pub notes: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct OrderRow {
    id: Uuid,
    mode: String,
    provider: String,
    external_id: String,
    status: String,
    currency: String,
    items: Json<Vec<OrderItem>>,
    subtotal: i64,
    tax: i64,
    delivery_fee: i64,
    tip: i64,
    discount: i64,
    total: i64,
    customer: Json<Customer>,
    delivery: Option<Json<Delivery>>,
    notes: Option<String>,
    metadata: Json<BTreeMap<String, String>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    event_seq: i32,
}

impl From<OrderRow> for Order {
    fn from(r: OrderRow) -> Self {
        Order {
            id: r.id,
            mode: r.mode,
            provider: r.provider,
            external_id: r.external_id,
            status: r.status,
            currency: r.currency,
            items: r.items.0,
            subtotal: r.subtotal,
            tax: r.tax,
            delivery_fee: r.delivery_fee,
            tip: r.tip,
            discount: r.discount,
            total: r.total,
            customer: r.customer.0,
            delivery: r.delivery.map(|d| d.0),
            notes: r.notes,
            metadata: r.metadata.0,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

const COLUMNS: &str = "id, mode, provider, external_id, status, currency, items, subtotal, tax, \
    delivery_fee, tip, discount, total, customer, delivery, notes, metadata, created_at, \
    updated_at, event_seq";

pub async fn get(pool: &PgPool, scope: Scope, id: Uuid) -> Result<Order> {
    sqlx::query_as::<_, OrderRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM orders WHERE tenant_id = $1 AND mode = $2 AND id = $3"
    )))
    .bind(scope.tenant_id)
    .bind(scope.mode.as_str())
    .bind(id)
    .fetch_optional(pool)
    .await?
    .map(Order::from)
    .ok_or_else(|| Error::not_found("order"))
}

/// The order of `provider` with the partner's `external_id`, locked for the caller's
/// transaction.
pub async fn find_external_for_update(
    conn: &mut sqlx::PgConnection,
    scope: Scope,
    provider: &str,
    external_id: &str,
) -> Result<Option<Order>> {
    Ok(sqlx::query_as::<_, OrderRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM orders
          WHERE tenant_id = $1 AND mode = $2 AND provider = $3 AND external_id = $4
          FOR UPDATE"
    )))
    .bind(scope.tenant_id)
    .bind(scope.mode.as_str())
    .bind(provider)
    .bind(external_id)
    .fetch_optional(conn)
    .await?
    .map(Order::from))
}

/// Filters of `GET /v1/orders`.
#[derive(Clone, Debug, Default)]
pub struct ListFilter {
    pub status: Option<OrderStatus>,
    pub provider: Option<String>,
    pub created_gte: Option<DateTime<Utc>>,
    pub created_lte: Option<DateTime<Utc>>,
    pub updated_gte: Option<DateTime<Utc>>,
}

/// Orders newest first, after the cursor `starting_after`.
pub async fn list(
    pool: &PgPool,
    scope: Scope,
    filter: &ListFilter,
    limit: i64,
    starting_after: Option<Uuid>,
) -> Result<Vec<Order>> {
    let rows = sqlx::query_as::<_, OrderRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM orders
          WHERE tenant_id = $1 AND mode = $2
            AND ($3::uuid IS NULL OR id < $3)
            AND ($4::text IS NULL OR status = $4)
            AND ($5::text IS NULL OR provider = $5)
            AND ($6::timestamptz IS NULL OR created_at >= $6)
            AND ($7::timestamptz IS NULL OR created_at <= $7)
            AND ($8::timestamptz IS NULL OR updated_at >= $8)
          ORDER BY id DESC LIMIT $9"
    )))
    .bind(scope.tenant_id)
    .bind(scope.mode.as_str())
    .bind(starting_after)
    .bind(filter.status.map(OrderStatus::as_str))
    .bind(&filter.provider)
    .bind(filter.created_gte)
    .bind(filter.created_lte)
    .bind(filter.updated_gte)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(Order::from).collect())
}

/// An entry of an order's history.
#[derive(Clone, Debug, Serialize, poem_openapi::Object, sqlx::FromRow)]
pub struct OrderHistoryEntry {
    pub id: Uuid,
    /// 1 for `order.created`, then 2, 3, … in the order the changes happened.
    pub seq: i32,
    pub r#type: String,
    /// What changed (`{"status": ["received", "confirmed"], "reason": …}`).
    pub changes: serde_json::Value,
    /// The order as of this event (what webhooks carried).
    pub data: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

/// An order's events, oldest first, after the event `starting_after`.
pub async fn history(
    pool: &PgPool,
    scope: Scope,
    order_id: Uuid,
    limit: i64,
    starting_after: Option<Uuid>,
) -> Result<Vec<OrderHistoryEntry>> {
    get(pool, scope, order_id).await?;
    // A cursor must be an entry of this order's history: an unknown one started the list
    // over, so a client paging with it went round for ever.
    let after: i32 = match starting_after {
        None => 0,
        Some(id) => sqlx::query_scalar(
            "SELECT seq FROM order_events WHERE id = $1 AND order_id = $2 AND tenant_id = $3",
        )
        .bind(id)
        .bind(order_id)
        .bind(scope.tenant_id)
        .fetch_optional(pool)
        .await?
        .ok_or_else(|| Error::not_found("entry of this order's history (`starting_after`)"))?,
    };
    Ok(sqlx::query_as::<_, OrderHistoryEntry>(
        "SELECT id, seq, type, changes, data, created_at FROM order_events
          WHERE order_id = $1 AND tenant_id = $2 AND seq > $3
          ORDER BY seq LIMIT $4",
    )
    .bind(order_id)
    .bind(scope.tenant_id)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

#[cfg(test)]
mod tests {
    use super::OrderStatus::{self, *};

    /// Every event an order emits is catalogued as built in (partners cannot post it, endpoint
    /// filters may name it).
    #[test]
    fn every_order_event_is_built_in() {
        use crate::events::catalog::is_built_in;
        assert!(is_built_in("order.created") && is_built_in("order.updated"));
        for s in OrderStatus::ALL.into_iter().filter(|s| *s != Received) {
            assert!(is_built_in(&format!("order.{}", s.as_str())), "{s:?}");
        }
    }

    /// The README's table of allowed moves, row by row: nothing more, nothing less.
    #[test]
    fn the_state_machine_is_exactly_the_documented_table() {
        let table: [(OrderStatus, &[OrderStatus]); 9] = [
            (Received, &[Confirmed, Rejected, Cancelled]),
            (Confirmed, &[Preparing, Cancelled]),
            (Preparing, &[Ready, Cancelled]),
            (Ready, &[OutForDelivery, Completed]),
            (OutForDelivery, &[Delivered]),
            (Delivered, &[Completed]),
            (Completed, &[]),
            (Cancelled, &[]),
            (Rejected, &[]),
        ];
        for from in OrderStatus::ALL {
            let documented = table.iter().find(|(f, _)| *f == from).unwrap().1;
            for to in OrderStatus::ALL {
                assert_eq!(
                    from.next().contains(&to),
                    documented.contains(&to),
                    "{} → {}",
                    from.as_str(),
                    to.as_str()
                );
            }
        }
        for s in OrderStatus::ALL {
            assert_eq!(OrderStatus::parse(s.as_str()), Some(s));
        }
    }
}
