//! Changing orders: creation (one statement: the order, its event, the event's job and the
//! idempotent answer), status moves and detail changes (on the caller's transaction).

use chrono::{SubsecRound, Utc};
use sqlx::{PgConnection, Row, types::Json};
use uuid::Uuid;

use super::{
    COLUMNS, Delivery, Order, OrderRow, OrderStatus,
    input::{ChangeStatus, CreateOrder, UpdateOrder, metadata, validate},
};
use crate::{
    crypto::Keyring,
    error::{Error, Result, is_unique_violation},
    events::{NewEvent, Source, events_json, insert_events_sql},
    idempotency::Claim,
    input::Text,
    jobs::{self, insert_jobs_sql},
    queue::JobTask,
    tenants::Scope,
};

/// Validates and stores a new order with its `order.created` event and the event's job, in one
/// statement (atomic: a duplicate `external_id` writes nothing). Returns the order and the
/// event's task to push after commit. With an idempotency `claim`, the `201` body is recorded
/// (encrypted) in the same statement.
pub async fn create<'c>(
    exec: impl sqlx::PgExecutor<'c>,
    scope: Scope,
    input: CreateOrder,
    claim: Option<(&Claim, &Keyring)>,
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
    let event = order_event(scope, &order, "order.created");
    let job = event.job();
    let sealed = match claim {
        Some((c, keyring)) => {
            let body = serde_json::to_vec(&order).map_err(|e| Error::Internal(e.into()))?;
            let (key_id, sealed) = c.seal(keyring, &body);
            Some((sealed, key_id))
        }
        None => None,
    };
    let claim = claim.map(|(c, _)| c);
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
            SELECT $24, $7, $8, $6, 1, 'order.created', $25, $23 WHERE (SELECT go FROM ok)),
         ev AS (",
        insert_events_sql!("$31"),
        " WHERE (SELECT go FROM ok))
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
        .bind(event.id)
        .bind(Json(&order))
        .bind(sealed.as_ref().map(|s| &s.0))
        .bind(sealed.as_ref().map(|s| &s.1))
        .bind(claim.map(|c| c.key.as_str()))
        .bind(claim.map(|c| c.claim_id))
        .bind(claim.map(|c| c.api_key_id))
        .bind(events_json(std::slice::from_ref(&event)))
        .fetch_one(exec)
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

/// Moves an order to `change.status` if the state machine allows it; emits `order.<status>`.
pub async fn change_status(
    conn: &mut PgConnection,
    scope: Scope,
    id: Uuid,
    change: ChangeStatus,
) -> Result<(Order, JobTask)> {
    let to = change.status;
    let reason = change.reason.map(Text::into_string);
    let (order, task) = mutate(conn, scope, id, move |order| {
        let from = OrderStatus::parse(&order.status).ok_or_else(|| {
            Error::Internal(anyhow::anyhow!("unknown stored status `{}`", order.status))
        })?;
        if !from.next().contains(&to) {
            let allowed: Vec<&str> = from.next().iter().map(|s| s.as_str()).collect();
            let (from, to) = (from.as_str(), to.as_str());
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
        order.status = to.as_str().to_owned();
        Ok(Some((
            format!("order.{}", to.as_str()),
            serde_json::json!({ "status": [from.as_str(), to.as_str()], "reason": reason }),
        )))
    })
    .await?;
    Ok((order, task.expect("a status change always emits its event")))
}

/// Changes an open order's notes, delivery details or metadata; emits `order.updated`. A
/// change of nothing returns the order as it is, with no event and no task.
pub async fn update(
    conn: &mut PgConnection,
    scope: Scope,
    id: Uuid,
    change: UpdateOrder,
) -> Result<(Order, Option<JobTask>)> {
    let notes = change.notes.map(Text::into_string);
    let delivery = change.delivery.map(Delivery::from);
    let metadata = change.metadata.map(|m| metadata(Some(m))).transpose()?;
    mutate(conn, scope, id, move |order| {
        let status = OrderStatus::parse(&order.status);
        if status.is_some_and(OrderStatus::is_final) {
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
            return Ok(None);
        }
        Ok(Some((
            "order.updated".to_owned(),
            serde_json::Value::Object(changed),
        )))
    })
    .await
}

/// The one way an existing order changes: lock it, apply `f`, and (unless `f` changed
/// nothing) write the order, its next event (with `f`'s type and changes, and a snapshot) and the event's job, on `conn` (the
/// caller's transaction, which also records the request's idempotent answer).
async fn mutate<F>(
    conn: &mut PgConnection,
    scope: Scope,
    id: Uuid,
    f: F,
) -> Result<(Order, Option<JobTask>)>
where
    F: FnOnce(&mut Order) -> Result<Option<(String, serde_json::Value)>>,
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
    let Some((event_type, changes)) = f(&mut order)? else {
        return Ok((order, None));
    };
    order.updated_at = Utc::now().trunc_subsecs(6).max(order.updated_at);
    let event = order_event(scope, &order, &event_type);
    let job = event.job();
    let query = sqlx::query(concat!(
        "WITH j AS (",
        insert_jobs_sql!(),
        "), ev AS (",
        insert_events_sql!("$19"),
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
        .bind(event.id)
        .bind(&order.mode)
        .bind(&event_type)
        .bind(Json(&order))
        .bind(changes)
        .bind(events_json(std::slice::from_ref(&event)))
        .execute(&mut *conn)
        .await?;
    Ok((order, Some(job.task())))
}

/// An order change's event for the outbox: a snapshot of the order, keyed by the order so each
/// endpoint gets one order's events in order. Its id is the order history entry's.
fn order_event(scope: Scope, order: &Order, event_type: &str) -> NewEvent {
    let mut event = NewEvent::new(
        scope.tenant_id,
        scope.mode,
        event_type,
        serde_json::to_value(order).unwrap_or_default(),
        Source::Order,
        order.updated_at,
    );
    event.ordering_key = Some(order.id.to_string());
    event
}
