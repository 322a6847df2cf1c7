//! Partner orders: validation with server-side totals, the status state machine, and the
//! order's history. Every change writes the order, an order event and the event's job in one
//! transaction; the worker fans events out to webhooks, in order per order and endpoint.

use std::collections::BTreeMap;

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool, Row, types::Json};
use uuid::Uuid;

use crate::{
    crypto::Keyring,
    error::{Error, Result, is_unique_violation},
    idempotency::Claim,
    jobs::{self, NewJob, insert_jobs_sql},
    queue::{JobTask, ORDER_EVENTS},
    tenants::Scope,
};

/// Attempts of an order-event fan-out: it only touches Postgres, so it fails only while
/// Postgres is unreachable (with the backoff, 25 attempts last over an hour); the cap stops a
/// poison event looping forever, and its order's later events then go on without it.
pub const EVENT_MAX_ATTEMPTS: i32 = 25;

/// Every status, in the order an order normally goes through them.
pub const STATUSES: &[&str] = &[
    "received",
    "confirmed",
    "preparing",
    "ready",
    "out_for_delivery",
    "delivered",
    "completed",
    "cancelled",
    "rejected",
];

/// The state machine: the statuses an order may move to from `from`.
pub fn allowed_next(from: &str) -> &'static [&'static str] {
    match from {
        "received" => &["confirmed", "rejected", "cancelled"],
        "confirmed" => &["preparing", "cancelled"],
        "preparing" => &["ready", "cancelled"],
        // Pickup orders complete straight from `ready`.
        "ready" => &["out_for_delivery", "completed"],
        "out_for_delivery" => &["delivered"],
        "delivered" => &["completed"],
        _ => &[],
    }
}

fn is_final(status: &str) -> bool {
    allowed_next(status).is_empty()
}

const MAX_METADATA_KEYS: usize = 50;

#[derive(Clone, Debug, Deserialize, poem_openapi::Object)]
#[serde(deny_unknown_fields)]
#[oai(example)]
pub struct CreateOrder {
    /// The partner's own id of the order; unique per tenant, mode and provider.
    pub external_id: String,
    /// Where the order came from: `generic` (default), `uber_eats`, `deliveroo`, `careem`,
    /// `talabat`, or any other lowercase slug.
    pub provider: Option<String>,
    /// ISO 4217 currency code of every amount in the order.
    pub currency: String,
    /// 1 to 500 line items.
    pub items: Vec<OrderItemInput>,
    pub customer: Customer,
    pub delivery: Option<Delivery>,
    /// Free text, at most 2000 characters.
    pub notes: Option<String>,
    /// Tax in minor units (default 0).
    pub tax: Option<i64>,
    /// Delivery fee in minor units (default 0).
    pub delivery_fee: Option<i64>,
    /// Tip in minor units (default 0).
    pub tip: Option<i64>,
    /// Discount in minor units, subtracted from the total (default 0).
    pub discount: Option<i64>,
    /// The total the partner computed; when given, it must equal Switchyard's
    /// (`subtotal + tax + delivery_fee + tip − discount`) or the order is refused.
    pub total: Option<i64>,
    /// Up to 50 string pairs for the partner's own use (keys ≤ 40, values ≤ 500 characters).
    pub metadata: Option<BTreeMap<String, String>>,
}

impl poem_openapi::types::Example for CreateOrder {
    fn example() -> Self {
        create_order_example()
    }
}

fn create_order_example() -> CreateOrder {
    CreateOrder {
        external_id: "ue-4711".into(),
        provider: Some("uber_eats".into()),
        currency: "EUR".into(),
        items: vec![OrderItemInput {
            sku: "PIZ-1".into(),
            name: "Margherita".into(),
            quantity: 2,
            unit_price: 950,
            modifiers: Some(vec![ModifierInput {
                name: "Extra basil".into(),
                quantity: Some(1),
                unit_price: 50,
            }]),
        }],
        customer: Customer {
            name: "Grace Hopper".into(),
            email: Some("grace@example.com".into()),
            phone: None,
        },
        delivery: Some(Delivery {
            address: "1 Navy Way, Arlington".into(),
            instructions: Some("Ring twice".into()),
            scheduled_at: None,
        }),
        notes: None,
        tax: Some(190),
        delivery_fee: Some(299),
        tip: None,
        discount: None,
        total: Some(2489),
        metadata: Some(BTreeMap::from([("store".into(), "berlin-3".into())])),
    }
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
    /// Options chosen for the item (up to 50); priced per unit of the item.
    pub modifiers: Option<Vec<ModifierInput>>,
}

#[derive(Clone, Debug, Deserialize, poem_openapi::Object)]
#[serde(deny_unknown_fields)]
pub struct ModifierInput {
    pub name: String,
    /// Per unit of the item, 1 to 100 (default 1).
    pub quantity: Option<i64>,
    /// Price of one modifier unit in minor units, 0 or more.
    pub unit_price: i64,
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
    pub delivery: Option<Delivery>,
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

fn amount(param: &str, value: Option<i64>) -> Result<i64> {
    let v = value.unwrap_or(0);
    if !(0..=1_000_000_000_000).contains(&v) {
        return Err(Error::invalid(
            "parameter_invalid",
            param,
            format!("`{param}` must be 0 or more minor units (at most 10^12)."),
        ));
    }
    Ok(v)
}

fn too_large() -> Error {
    Error::invalid(
        "parameter_invalid",
        "items",
        "The order total is too large.",
    )
}

fn validate_provider(p: Option<&str>) -> Result<String> {
    let p = p.map(str::trim).unwrap_or("generic");
    if p.is_empty()
        || p.len() > 40
        || !p
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(Error::invalid(
            "parameter_invalid",
            "provider",
            "`provider` must be a lowercase slug of 1 to 40 characters (`uber_eats`).",
        ));
    }
    Ok(p.to_owned())
}

fn validate_metadata(m: Option<BTreeMap<String, String>>) -> Result<BTreeMap<String, String>> {
    let m = m.unwrap_or_default();
    if m.len() > MAX_METADATA_KEYS {
        return Err(Error::invalid(
            "parameter_invalid",
            "metadata",
            format!("`metadata` holds at most {MAX_METADATA_KEYS} keys."),
        ));
    }
    for (k, v) in &m {
        if k.is_empty() || k.chars().count() > 40 {
            return Err(Error::invalid(
                "parameter_invalid",
                "metadata",
                "`metadata` keys must be 1 to 40 characters.",
            ));
        }
        if v.chars().count() > 500 {
            return Err(Error::invalid(
                "parameter_invalid",
                format!("metadata.{k}"),
                format!("`metadata.{k}` must be at most 500 characters."),
            ));
        }
    }
    Ok(m)
}

fn validate_delivery(d: Option<Delivery>) -> Result<Option<Delivery>> {
    d.map(|d| {
        Ok(Delivery {
            address: text("delivery.address", &d.address, 1000)?,
            instructions: optional_text("delivery.instructions", d.instructions.as_deref(), 1000)?,
            scheduled_at: d.scheduled_at,
        })
    })
    .transpose()
}

/// A validated order with server-side totals, ready to insert.
#[derive(Debug)]
struct ValidOrder {
    external_id: String,
    provider: String,
    currency: String,
    items: Vec<OrderItem>,
    subtotal: i64,
    tax: i64,
    delivery_fee: i64,
    tip: i64,
    discount: i64,
    total: i64,
    customer: Customer,
    delivery: Option<Delivery>,
    notes: Option<String>,
    metadata: BTreeMap<String, String>,
}

fn validate(input: CreateOrder) -> Result<ValidOrder> {
    let external_id = text("external_id", &input.external_id, 255)?;
    let provider = validate_provider(input.provider.as_deref())?;
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
        let unit_price = amount(&p("unit_price"), Some(it.unit_price))?;
        let inputs = it.modifiers.unwrap_or_default();
        if inputs.len() > 50 {
            return Err(Error::invalid(
                "parameter_invalid",
                p("modifiers"),
                format!("`{}` holds at most 50 modifiers.", p("modifiers")),
            ));
        }
        let mut modifiers = Vec::with_capacity(inputs.len());
        let mut unit_total = unit_price;
        for (j, m) in inputs.into_iter().enumerate() {
            let mp = |f: &str| format!("items[{i}].modifiers[{j}].{f}");
            let quantity = m.quantity.unwrap_or(1);
            if !(1..=100).contains(&quantity) {
                return Err(Error::invalid(
                    "parameter_invalid",
                    mp("quantity"),
                    format!("`{}` must be between 1 and 100.", mp("quantity")),
                ));
            }
            let price = amount(&mp("unit_price"), Some(m.unit_price))?;
            unit_total = unit_total
                .checked_add(quantity * price)
                .ok_or_else(too_large)?;
            modifiers.push(Modifier {
                name: text(&mp("name"), &m.name, 300)?,
                quantity,
                unit_price: price,
            });
        }
        let line_total = it.quantity.checked_mul(unit_total).ok_or_else(too_large)?;
        subtotal = subtotal.checked_add(line_total).ok_or_else(too_large)?;
        items.push(OrderItem {
            sku,
            name,
            quantity: it.quantity,
            unit_price,
            modifiers,
            line_total,
        });
    }
    let tax = amount("tax", input.tax)?;
    let delivery_fee = amount("delivery_fee", input.delivery_fee)?;
    let tip = amount("tip", input.tip)?;
    let discount = amount("discount", input.discount)?;
    let total = [tax, delivery_fee, tip]
        .into_iter()
        .try_fold(subtotal, |acc, x| acc.checked_add(x))
        .ok_or_else(too_large)?
        - discount;
    if total < 0 {
        return Err(Error::invalid(
            "parameter_invalid",
            "discount",
            "`discount` exceeds the order's amount.",
        ));
    }
    if let Some(claimed) = input.total
        && claimed != total
    {
        return Err(Error::invalid(
            "total_mismatch",
            "total",
            format!(
                "`total` is {claimed} but the items and charges add up to {total} \
                 (subtotal {subtotal} + tax {tax} + delivery_fee {delivery_fee} + tip {tip} \
                 − discount {discount})."
            ),
        ));
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
    Ok(ValidOrder {
        external_id,
        provider,
        currency,
        items,
        subtotal,
        tax,
        delivery_fee,
        tip,
        discount,
        total,
        customer,
        delivery: validate_delivery(input.delivery)?,
        notes: optional_text("notes", input.notes.as_deref(), 2000)?,
        metadata: validate_metadata(input.metadata)?,
    })
}

/// Validates and stores a new order with its `order.created` event and the event's job, in one
/// statement (atomic: a duplicate `external_id` writes nothing). Returns the order and the
/// event's task to push after commit. With an idempotency `claim`, the `201` body is recorded
/// (encrypted) in the same statement.
pub async fn create(
    pool: &PgPool,
    keyring: &Keyring,
    scope: Scope,
    input: CreateOrder,
    claim: Option<&Claim>,
) -> Result<(Order, JobTask)> {
    let v = validate(input)?;
    // Postgres keeps microseconds: the response and the event must match what GET returns.
    let now = Utc::now().trunc_subsecs(6);
    let order = Order {
        id: Uuid::now_v7(),
        mode: scope.mode.as_str().to_owned(),
        provider: v.provider,
        external_id: v.external_id,
        status: "received".to_owned(),
        currency: v.currency,
        items: v.items,
        subtotal: v.subtotal,
        tax: v.tax,
        delivery_fee: v.delivery_fee,
        tip: v.tip,
        discount: v.discount,
        total: v.total,
        customer: v.customer,
        delivery: v.delivery,
        notes: v.notes,
        metadata: v.metadata,
        created_at: now,
        updated_at: now,
    };
    let event_id = Uuid::now_v7();
    let job = NewJob::new(ORDER_EVENTS, scope.tenant_id, event_id, EVENT_MAX_ATTEMPTS);
    let sealed = match claim {
        Some(c) => {
            let body = serde_json::to_vec(&order).map_err(|e| Error::Internal(e.into()))?;
            let (key_id, sealed) = c.seal(keyring, &body);
            Some((sealed, key_id))
        }
        None => None,
    };
    // With a claim, everything is written only if the claim is still this request's (it may
    // have lapsed and been taken over): the order and its idempotent answer commit together.
    let query = sqlx::query(concat!(
        "WITH c AS (
            UPDATE idempotency_keys
               SET state = 'finished', response_status = 201,
                   response_content_type = 'application/json', response_body = $26,
                   response_key_id = $27
             WHERE api_key_id = $30 AND key = $28 AND claim_id = $29 AND state = 'started'
            RETURNING 1),
         ok AS (SELECT $29::uuid IS NULL OR EXISTS (SELECT 1 FROM c) AS go),
         j AS (",
        insert_jobs_sql!(),
        " WHERE (SELECT go FROM ok)), o AS (
            INSERT INTO orders (id, tenant_id, mode, provider, external_id, status, currency,
                                items, subtotal, tax, delivery_fee, tip, discount, total,
                                customer, delivery, notes, metadata, created_at, updated_at)
            SELECT $6, $7, $8, $9, $10, 'received', $11, $12, $13, $14, $15, $16, $17, $18,
                   $19, $20, $21, $22, $23, $23
             WHERE (SELECT go FROM ok)),
         e AS (
            INSERT INTO order_events (id, tenant_id, mode, order_id, seq, type, data, created_at)
            SELECT $24, $7, $8, $6, 1, 'order.created', $25, $23 WHERE (SELECT go FROM ok))
         SELECT go FROM ok"
    ));
    let row = jobs::bind_insert(query, std::slice::from_ref(&job))
        .bind(order.id)
        .bind(scope.tenant_id)
        .bind(&order.mode)
        .bind(&order.provider)
        .bind(&order.external_id)
        .bind(&order.currency)
        .bind(Json(&order.items))
        .bind(order.subtotal)
        .bind(order.tax)
        .bind(order.delivery_fee)
        .bind(order.tip)
        .bind(order.discount)
        .bind(order.total)
        .bind(Json(&order.customer))
        .bind(order.delivery.as_ref().map(Json))
        .bind(&order.notes)
        .bind(Json(&order.metadata))
        .bind(now)
        .bind(event_id)
        .bind(Json(&order))
        .bind(sealed.as_ref().map(|s| &s.0))
        .bind(sealed.as_ref().map(|s| &s.1))
        .bind(claim.map(|c| c.key.as_str()))
        .bind(claim.map(|c| c.claim_id))
        .bind(claim.map(|c| c.api_key_id))
        .fetch_one(pool)
        .await
        .map_err(|e| {
            if is_unique_violation(&e, "orders_external") {
                Error::conflict(
                    "order_exists",
                    Some("external_id"),
                    format!(
                        "An order with external_id `{}` from provider `{}` already exists.",
                        order.external_id, order.provider
                    ),
                )
            } else {
                e.into()
            }
        })?;
    let written: bool = row.try_get("go")?;
    if !written {
        return Err(crate::idempotency::in_use());
    }
    Ok((order, job.task()))
}

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

/// Filters of `GET /v1/orders`.
#[derive(Clone, Debug, Default)]
pub struct ListFilter {
    pub status: Option<String>,
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
    if let Some(s) = &filter.status
        && !STATUSES.contains(&s.as_str())
    {
        return Err(Error::invalid(
            "parameter_invalid",
            "status",
            format!("`status` must be one of {}.", STATUSES.join(", ")),
        ));
    }
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
    .bind(&filter.status)
    .bind(&filter.provider)
    .bind(filter.created_gte)
    .bind(filter.created_lte)
    .bind(filter.updated_gte)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(Order::from).collect())
}

#[derive(Clone, Debug, Deserialize, poem_openapi::Object)]
#[serde(deny_unknown_fields)]
pub struct ChangeStatus {
    /// The new status; see `allowed transitions` in the README.
    pub status: String,
    /// Why (shown in the order's history), at most 500 characters.
    pub reason: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, poem_openapi::Object)]
#[serde(deny_unknown_fields)]
pub struct CancelOrder {
    /// Why the order is cancelled, at most 500 characters.
    pub reason: Option<String>,
}

/// A change to an open order's details; absent fields stay as they are.
#[derive(Clone, Debug, Default, Deserialize, poem_openapi::Object)]
#[serde(deny_unknown_fields)]
pub struct UpdateOrder {
    pub notes: Option<String>,
    pub delivery: Option<Delivery>,
    /// Replaces the metadata.
    pub metadata: Option<BTreeMap<String, String>>,
}

/// Moves an order to `change.status` if the state machine allows it; emits `order.<status>`.
pub async fn change_status(
    conn: &mut PgConnection,
    scope: Scope,
    id: Uuid,
    change: ChangeStatus,
) -> Result<(Order, JobTask)> {
    let to = change.status.trim().to_owned();
    if !STATUSES.contains(&to.as_str()) {
        return Err(Error::invalid(
            "parameter_invalid",
            "status",
            format!("`status` must be one of {}.", STATUSES.join(", ")),
        ));
    }
    let reason = optional_text("reason", change.reason.as_deref(), 500)?;
    mutate(conn, scope, id, move |order| {
        let from = order.status.clone();
        if !allowed_next(&from).contains(&to.as_str()) {
            let allowed = allowed_next(&from);
            return Err(Error::conflict(
                "invalid_transition",
                Some("status"),
                if allowed.is_empty() {
                    format!("The order is `{from}`, a final status; it cannot become `{to}`.")
                } else {
                    format!(
                        "An order cannot go from `{from}` to `{to}`; from `{from}` it may go to: {}.",
                        allowed.join(", ")
                    )
                },
            ));
        }
        order.status = to.clone();
        Ok((
            format!("order.{to}"),
            serde_json::json!({ "status": [from, to], "reason": reason }),
        ))
    })
    .await
}

/// Changes an open order's notes, delivery details or metadata; emits `order.updated`.
pub async fn update(
    conn: &mut PgConnection,
    scope: Scope,
    id: Uuid,
    change: UpdateOrder,
) -> Result<(Order, JobTask)> {
    let notes = optional_text("notes", change.notes.as_deref(), 2000)?;
    let delivery = validate_delivery(change.delivery)?;
    let metadata = change
        .metadata
        .map(|m| validate_metadata(Some(m)))
        .transpose()?;
    mutate(conn, scope, id, move |order| {
        if is_final(&order.status) {
            return Err(Error::conflict(
                "order_closed",
                None,
                format!("The order is `{}`; it can no longer change.", order.status),
            ));
        }
        let mut changed = serde_json::Map::new();
        if let Some(n) = notes {
            changed.insert("notes".into(), serde_json::json!([order.notes, n]));
            order.notes = Some(n);
        }
        if let Some(d) = delivery {
            changed.insert("delivery".into(), serde_json::json!([order.delivery, d]));
            order.delivery = Some(d);
        }
        if let Some(m) = metadata {
            changed.insert("metadata".into(), serde_json::json!([order.metadata, m]));
            order.metadata = m;
        }
        if changed.is_empty() {
            return Err(Error::invalid(
                "parameter_missing",
                "notes",
                "Send at least one of `notes`, `delivery`, `metadata`.",
            ));
        }
        Ok(("order.updated".into(), serde_json::Value::Object(changed)))
    })
    .await
}

/// The one way an existing order changes: lock it, apply `f`, and write the order, its next
/// event (with `f`'s type and changes, and a snapshot) and the event's job, on `conn` (the
/// caller's transaction, which also records the request's idempotent answer).
async fn mutate<F>(
    conn: &mut PgConnection,
    scope: Scope,
    id: Uuid,
    f: F,
) -> Result<(Order, JobTask)>
where
    F: FnOnce(&mut Order) -> Result<(String, serde_json::Value)>,
{
    let row = sqlx::query_as::<_, OrderRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM orders WHERE tenant_id = $1 AND mode = $2 AND id = $3 FOR UPDATE"
    )))
    .bind(scope.tenant_id)
    .bind(scope.mode.as_str())
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| Error::not_found("order"))?;
    let seq = row.event_seq + 1;
    let mut order = Order::from(row);
    let (event_type, changes) = f(&mut order)?;
    order.updated_at = Utc::now().trunc_subsecs(6).max(order.updated_at);
    let event_id = Uuid::now_v7();
    let job = NewJob::new(ORDER_EVENTS, scope.tenant_id, event_id, EVENT_MAX_ATTEMPTS);
    let query = sqlx::query(concat!(
        "WITH j AS (",
        insert_jobs_sql!(),
        "), o AS (
            UPDATE orders SET status = $8, notes = $9, delivery = $10, metadata = $11,
                              updated_at = $12, event_seq = $13
             WHERE id = $6)
         INSERT INTO order_events (id, tenant_id, mode, order_id, seq, type, data, changes,
                                   created_at)
         VALUES ($14, $7, $15, $6, $13, $16, $17, $18, $12)"
    ));
    jobs::bind_insert(query, std::slice::from_ref(&job))
        .bind(order.id)
        .bind(scope.tenant_id)
        .bind(&order.status)
        .bind(&order.notes)
        .bind(order.delivery.as_ref().map(Json))
        .bind(Json(&order.metadata))
        .bind(order.updated_at)
        .bind(seq)
        .bind(event_id)
        .bind(&order.mode)
        .bind(&event_type)
        .bind(Json(&order))
        .bind(changes)
        .execute(&mut *conn)
        .await?;
    Ok((order, job.task()))
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
    Ok(sqlx::query_as::<_, OrderHistoryEntry>(
        "SELECT id, seq, type, changes, data, created_at FROM order_events
          WHERE order_id = $1 AND tenant_id = $2
            AND seq > COALESCE((SELECT seq FROM order_events WHERE id = $3 AND order_id = $1), 0)
          ORDER BY seq LIMIT $4",
    )
    .bind(order_id)
    .bind(scope.tenant_id)
    .bind(starting_after)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// An order event as the fan-out reads it.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct OrderEvent {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub mode: String,
    pub order_id: Uuid,
    pub seq: i32,
    pub r#type: String,
    pub data: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

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
                    modifiers: None,
                },
                OrderItemInput {
                    sku: "F1".into(),
                    name: "Fries".into(),
                    quantity: 1,
                    unit_price: 399,
                    modifiers: None,
                },
            ],
            customer: Customer {
                name: "Ada".into(),
                email: Some("ada@example.com".into()),
                phone: None,
            },
            delivery: None,
            notes: None,
            provider: None,
            tax: None,
            delivery_fee: None,
            tip: None,
            discount: None,
            total: None,
            metadata: None,
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
    fn modifiers_and_charges_are_totalled_and_a_claimed_total_is_checked() {
        let example = create_order_example();
        let v = validate(example.clone()).unwrap();
        // 2 × (950 + 50) = 2000; + 190 + 299 = 2489.
        assert_eq!(v.items[0].line_total, 2000);
        assert_eq!(v.total, 2489);
        let mut wrong = example.clone();
        wrong.total = Some(2490);
        let e = validate(wrong).unwrap_err();
        assert!(
            matches!(&e, Error::Invalid { code: "total_mismatch", param: Some(p), .. } if p == "total")
        );
        assert!(e.to_string().contains("2489"), "{e}");
        let mut generous = example;
        generous.total = None;
        generous.discount = Some(1_000_000);
        assert_eq!(param_of(validate(generous).unwrap_err()), "discount");
    }

    #[test]
    fn the_state_machine_allows_only_forward_moves_and_early_cancellation() {
        assert!(allowed_next("received").contains(&"confirmed"));
        assert!(allowed_next("preparing").contains(&"cancelled"));
        assert!(!allowed_next("out_for_delivery").contains(&"cancelled"));
        assert!(!allowed_next("confirmed").contains(&"delivered"));
        for s in ["completed", "cancelled", "rejected"] {
            assert!(is_final(s));
        }
        // Every status is reachable from `received`.
        let mut seen = vec!["received"];
        let mut i = 0;
        while i < seen.len() {
            for n in allowed_next(seen[i]) {
                if !seen.contains(n) {
                    seen.push(n);
                }
            }
            i += 1;
        }
        assert_eq!(seen.len(), STATUSES.len());
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
        o.provider = Some("Uber Eats".into());
        assert_eq!(param_of(validate(o).unwrap_err()), "provider");
        let mut o = sample();
        o.items[0].modifiers = Some(vec![ModifierInput {
            name: "x".into(),
            quantity: Some(0),
            unit_price: 1,
        }]);
        assert_eq!(
            param_of(validate(o).unwrap_err()),
            "items[0].modifiers[0].quantity"
        );
        let mut o = sample();
        o.external_id = "  ".into();
        assert_eq!(param_of(validate(o).unwrap_err()), "external_id");
    }
}
