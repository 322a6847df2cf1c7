//! Orders from a delivery platform's order webhooks (the inbound `order_feed` action). A
//! declarative [`OrderMapping`] turns the platform's body into a [`CreateOrder`] (JSON
//! pointers, constants, amounts converted to minor units); [`apply`] creates the order, or
//! (same provider and external id) brings it up to date: notes and delivery details changed,
//! the status walked forward through the state machine. Each change writes its event, on the
//! caller's transaction, so a replayed webhook changes nothing twice.

mod mapping;

use std::collections::{HashMap, VecDeque};

use serde_json::Value;
use sqlx::PgConnection;

pub use self::mapping::{
    AmountUnit, Field, ItemsMapping, ModifiersMapping, OrderMapping, Pointer, StatusMapping,
    to_minor,
};
use super::{
    Delivery, Order, OrderStatus, changes, find_external_for_update,
    input::{ChangeStatus, CreateOrder, ProviderSlug, UpdateOrder},
};
use crate::{error::Result, input::Text, queue::JobTask, tenants::Scope};

/// What a feed webhook did to its order.
pub struct Applied {
    pub order: Order,
    pub created: bool,
    /// The events written, in order (`order.created`, `order.confirmed`, …).
    pub events: Vec<String>,
    /// The events' fan-out tasks, to push after commit.
    pub tasks: Vec<JobTask>,
    /// What was left as it is, and why.
    pub note: Option<String>,
}

/// Creates or updates the order `body` describes, on `conn` (the job's transaction). A body
/// the mapping cannot turn into a valid order is [`Error::Invalid`] with the reason.
pub async fn apply(
    conn: &mut PgConnection,
    scope: Scope,
    provider: &ProviderSlug,
    mapping: &OrderMapping,
    body: &Value,
) -> Result<Applied> {
    let (input, wanted) = mapping::map(mapping, provider, body)?;
    // Two webhooks of one new order may be processed at once: one creates it, the other waits
    // here and then updates it (instead of failing on the unique index).
    let key = format!(
        "order_feed/{}/{}/{}/{}",
        scope.tenant_id,
        scope.mode.as_str(),
        provider.as_str(),
        input.external_id.as_str()
    );
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(key)
        .execute(&mut *conn)
        .await?;
    let existing =
        find_external_for_update(conn, scope, provider, input.external_id.as_str()).await?;
    let mut applied = match existing {
        None => {
            let (order, task) = changes::create(&mut *conn, scope, input, None).await?;
            Applied {
                order,
                created: true,
                events: vec!["order.created".to_owned()],
                tasks: vec![task],
                note: None,
            }
        }
        Some(order) => update_details(conn, scope, order, input).await?,
    };
    if let Some(to) = wanted {
        walk_status(conn, scope, &mut applied, to).await?;
    }
    Ok(applied)
}

/// Changes the notes and delivery details that differ from the order's (an open order's only).
async fn update_details(
    conn: &mut PgConnection,
    scope: Scope,
    order: Order,
    input: CreateOrder,
) -> Result<Applied> {
    let mut applied = Applied {
        order,
        created: false,
        events: Vec::new(),
        tasks: Vec::new(),
        note: None,
    };
    let notes = input
        .notes
        .filter(|n| applied.order.notes.as_deref() != Some(n.as_str()));
    let delivery = input
        .delivery
        .filter(|d| applied.order.delivery.as_ref() != Some(&Delivery::from(d.clone())));
    let closed = OrderStatus::parse(&applied.order.status).is_some_and(OrderStatus::is_final);
    if (notes.is_some() || delivery.is_some()) && !closed {
        let change = UpdateOrder {
            notes,
            delivery,
            metadata: None,
        };
        let (order, task) = changes::update(conn, scope, applied.order.id, change).await?;
        applied.order = order;
        if let Some(t) = task {
            applied.events.push("order.updated".to_owned());
            applied.tasks.push(t);
        }
    }
    Ok(applied)
}

/// Moves the order to `to` through the state machine, one event per step; a status it cannot
/// reach (a late webhook, a closed order) is left as it is, with a note.
async fn walk_status(
    conn: &mut PgConnection,
    scope: Scope,
    applied: &mut Applied,
    to: OrderStatus,
) -> Result<()> {
    let Some(from) = OrderStatus::parse(&applied.order.status) else {
        return Ok(());
    };
    let Some(steps) = path(from, to) else {
        applied.note = Some(format!(
            "The status stays `{}`: `{}` cannot follow it.",
            from.as_str(),
            to.as_str()
        ));
        return Ok(());
    };
    for status in steps {
        let change = ChangeStatus {
            status,
            reason: Text::new("order feed").ok(),
        };
        let (order, task) = changes::change_status(conn, scope, applied.order.id, change).await?;
        applied.order = order;
        applied.events.push(format!("order.{}", status.as_str()));
        applied.tasks.push(task);
    }
    Ok(())
}

/// The shortest way from `from` to `to` (empty when they are the same), if there is one.
fn path(from: OrderStatus, to: OrderStatus) -> Option<Vec<OrderStatus>> {
    let mut came_from: HashMap<OrderStatus, OrderStatus> = HashMap::new();
    let mut queue = VecDeque::from([from]);
    while let Some(s) = queue.pop_front() {
        if s == to {
            let mut steps = vec![];
            let mut at = s;
            while at != from {
                steps.push(at);
                at = came_from[&at];
            }
            steps.reverse();
            return Some(steps);
        }
        for &n in s.next() {
            if n != from && !came_from.contains_key(&n) {
                came_from.insert(n, s);
                queue.push_back(n);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_walks_the_state_machine() {
        use OrderStatus::*;
        assert_eq!(path(Received, Received), Some(vec![]));
        assert_eq!(path(Received, Preparing), Some(vec![Confirmed, Preparing]));
        assert_eq!(path(Preparing, Cancelled), Some(vec![Cancelled]));
        assert_eq!(path(Delivered, Preparing), None);
        assert_eq!(path(Ready, Cancelled), None);
    }
}
