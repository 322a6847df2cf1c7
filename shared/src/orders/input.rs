//! What partners send to create and change orders (typed: the schema is what the server
//! accepts, see `crate::input`), and the server-side totals of a new order.

use std::collections::BTreeMap;

use crate::input::Time;
use serde::Deserialize;

use super::{Customer, Delivery, Modifier, OrderItem, OrderStatus};
use crate::{
    error::{Error, Result},
    input::{Int, Text, pattern_string},
};

/// Amounts in minor units of the currency: 0 to 10^12.
pub type Amount = Int<0, 1_000_000_000_000>;
/// Most line items of an order, modifiers of an item, metadata pairs.
const MAX_ITEMS: usize = 500;
const MAX_MODIFIERS: usize = 50;
const MAX_METADATA_KEYS: usize = 50;

pattern_string!(
    /// Where an order came from: a lowercase slug (`uber_eats`).
    ProviderSlug,
    "^[a-z0-9_]{1,40}$",
    "a lowercase slug of 1 to 40 characters (`uber_eats`)"
);
pattern_string!(
    /// An ISO 4217 currency code (`EUR`).
    CurrencyCode,
    "^[A-Z]{3}$",
    "an ISO 4217 code such as `USD`"
);
pattern_string!(
    /// An email address: a local part, `@`, and a domain of two or more labels.
    Email,
    "^[^@ \t\r\n]{1,64}@[^@ \t\r\n.]+([.][^@ \t\r\n.]+)+$",
    "an email address",
    254
);

impl CurrencyCode {
    /// Digits of the minor unit (ISO 4217): 2 for most currencies, 0 for `JPY`, 3 for `KWD`.
    pub fn minor_digits(&self) -> u32 {
        match self.as_str() {
            "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF"
            | "UGX" | "UYI" | "VND" | "VUV" | "XAF" | "XOF" | "XPF" => 0,
            "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
            _ => 2,
        }
    }
}

/// Up to 50 string pairs for the partner's own use (values at most 500 characters).
pub type Metadata = BTreeMap<String, Text<0, 500>>;

#[derive(Clone, Debug, Deserialize, poem_openapi::Object)]
#[serde(deny_unknown_fields)]
#[oai(example, deny_unknown_fields)]
pub struct CreateOrder {
    /// The partner's own id of the order; unique per tenant, mode and provider.
    pub external_id: Text<1, 255>,
    /// Where the order came from: `generic` (default), `uber_eats`, `deliveroo`, `careem`,
    /// `talabat`, or any other lowercase slug.
    #[oai(nullable)]
    pub provider: Option<ProviderSlug>,
    /// ISO 4217 currency code of every amount in the order.
    pub currency: CurrencyCode,
    /// 1 to 500 line items.
    #[oai(validator(min_items = 1, max_items = 500))]
    pub items: Vec<OrderItemInput>,
    pub customer: CustomerInput,
    #[oai(nullable)]
    pub delivery: Option<DeliveryInput>,
    /// Free text, at most 2000 characters.
    #[oai(nullable)]
    pub notes: Option<Text<1, 2000>>,
    /// Tax in minor units (default 0).
    #[oai(nullable)]
    pub tax: Option<Amount>,
    /// Delivery fee in minor units (default 0).
    #[oai(nullable)]
    pub delivery_fee: Option<Amount>,
    /// Tip in minor units (default 0).
    #[oai(nullable)]
    pub tip: Option<Amount>,
    /// Discount in minor units, subtracted from the total (default 0); at most the rest.
    #[oai(nullable)]
    pub discount: Option<Amount>,
    /// The total the partner computed; when given, it must equal Switchyard's
    /// (`subtotal + tax + delivery_fee + tip − discount`) or the order is refused.
    #[oai(nullable)]
    pub total: Option<i64>,
    /// Up to 50 string pairs for the partner's own use (values at most 500 characters).
    #[oai(nullable, validator(max_properties = 50))]
    pub metadata: Option<Metadata>,
}

impl poem_openapi::types::Example for CreateOrder {
    fn example() -> Self {
        serde_json::from_value(serde_json::json!({
            "external_id": "ue-4711",
            "provider": "uber_eats",
            "currency": "EUR",
            "items": [{
                "sku": "PIZ-1", "name": "Margherita", "quantity": 2, "unit_price": 950,
                "modifiers": [{ "name": "Extra basil", "quantity": 1, "unit_price": 50 }]
            }],
            "customer": { "name": "Grace Hopper", "email": "grace@example.com" },
            "delivery": { "address": "1 Navy Way, Arlington", "instructions": "Ring twice" },
            "tax": 190,
            "delivery_fee": 299,
            "total": 2489,
            "metadata": { "store": "berlin-3" }
        }))
        .expect("the example is a valid order")
    }
}

#[derive(Clone, Debug, Deserialize, poem_openapi::Object)]
#[serde(deny_unknown_fields)]
#[oai(deny_unknown_fields)]
pub struct OrderItemInput {
    pub sku: Text<1, 100>,
    pub name: Text<1, 300>,
    /// Whole units, 1 to 10000.
    pub quantity: Int<1, 10_000>,
    /// Price of one unit in minor units of the currency (cents), 0 to 10^12.
    pub unit_price: Amount,
    /// Options chosen for the item (up to 50); priced per unit of the item.
    #[oai(nullable, validator(max_items = 50))]
    pub modifiers: Option<Vec<ModifierInput>>,
}

#[derive(Clone, Debug, Deserialize, poem_openapi::Object)]
#[serde(deny_unknown_fields)]
#[oai(deny_unknown_fields)]
pub struct ModifierInput {
    pub name: Text<1, 300>,
    /// Per unit of the item, 1 to 100 (default 1).
    #[oai(nullable)]
    pub quantity: Option<Int<1, 100>>,
    /// Price of one modifier unit in minor units, 0 to 10^12.
    pub unit_price: Amount,
}

#[derive(Clone, Debug, Deserialize, poem_openapi::Object)]
#[serde(deny_unknown_fields)]
#[oai(deny_unknown_fields)]
pub struct CustomerInput {
    pub name: Text<1, 200>,
    #[oai(nullable)]
    pub email: Option<Email>,
    #[oai(nullable)]
    pub phone: Option<Text<1, 40>>,
}

#[derive(Clone, Debug, Deserialize, poem_openapi::Object)]
#[serde(deny_unknown_fields)]
#[oai(deny_unknown_fields)]
pub struct DeliveryInput {
    /// Delivery address as one text block.
    pub address: Text<1, 1000>,
    #[oai(nullable)]
    pub instructions: Option<Text<1, 1000>>,
    /// When the customer wants the order delivered.
    #[oai(nullable)]
    pub scheduled_at: Option<Time>,
}

impl From<DeliveryInput> for Delivery {
    fn from(d: DeliveryInput) -> Self {
        Delivery {
            address: d.address.into_string(),
            instructions: d.instructions.map(Text::into_string),
            scheduled_at: d.scheduled_at.map(Time::get),
        }
    }
}

#[derive(Clone, Debug, Deserialize, poem_openapi::Object)]
#[serde(deny_unknown_fields)]
#[oai(deny_unknown_fields)]
pub struct ChangeStatus {
    /// The new status; see `allowed transitions` in the README.
    pub status: OrderStatus,
    /// Why (shown in the order's history), at most 500 characters.
    #[oai(nullable)]
    pub reason: Option<Text<1, 500>>,
}

#[derive(Clone, Debug, Default, Deserialize, poem_openapi::Object)]
#[serde(deny_unknown_fields)]
#[oai(deny_unknown_fields)]
pub struct CancelOrder {
    /// Why the order is cancelled, at most 500 characters.
    #[oai(nullable)]
    pub reason: Option<Text<1, 500>>,
}

/// A change to an open order's details; absent fields stay as they are (a change with none of
/// them changes nothing and emits no event).
#[derive(Clone, Debug, Default, Deserialize, poem_openapi::Object)]
#[serde(deny_unknown_fields)]
#[oai(deny_unknown_fields)]
pub struct UpdateOrder {
    #[oai(nullable)]
    pub notes: Option<Text<1, 2000>>,
    #[oai(nullable)]
    pub delivery: Option<DeliveryInput>,
    /// Replaces the metadata (up to 50 pairs, values at most 500 characters).
    #[oai(nullable, validator(max_properties = 50))]
    pub metadata: Option<Metadata>,
}

/// Metadata as stored, after its one check the types cannot make (how many pairs).
pub fn metadata(m: Option<Metadata>) -> Result<BTreeMap<String, String>> {
    let m = m.unwrap_or_default();
    if m.len() > MAX_METADATA_KEYS {
        return Err(Error::invalid(
            "parameter_invalid",
            "metadata",
            format!("`metadata` holds at most {MAX_METADATA_KEYS} pairs."),
        ));
    }
    Ok(m.into_iter().map(|(k, v)| (k, v.into_string())).collect())
}

/// A validated order with server-side totals, ready to insert.
#[derive(Debug)]
pub struct ValidOrder {
    pub external_id: String,
    pub provider: String,
    pub currency: String,
    pub items: Vec<OrderItem>,
    pub subtotal: i64,
    pub tax: i64,
    pub delivery_fee: i64,
    pub tip: i64,
    pub discount: i64,
    pub total: i64,
    pub customer: Customer,
    pub delivery: Option<Delivery>,
    pub notes: Option<String>,
    pub metadata: BTreeMap<String, String>,
}

fn too_large() -> Error {
    Error::invalid(
        "parameter_invalid",
        "items",
        "The order total is too large.",
    )
}

/// The checks that span fields (counts, totals) and the server-side amounts.
pub fn validate(input: CreateOrder) -> Result<ValidOrder> {
    if input.items.is_empty() || input.items.len() > MAX_ITEMS {
        return Err(Error::invalid(
            "parameter_invalid",
            "items",
            format!("`items` must hold 1 to {MAX_ITEMS} line items."),
        ));
    }
    let mut items = Vec::with_capacity(input.items.len());
    let mut subtotal: i64 = 0;
    for (i, it) in input.items.into_iter().enumerate() {
        let inputs = it.modifiers.unwrap_or_default();
        if inputs.len() > MAX_MODIFIERS {
            return Err(Error::invalid(
                "parameter_invalid",
                format!("items[{i}].modifiers"),
                format!("`items[{i}].modifiers` holds at most {MAX_MODIFIERS} modifiers."),
            ));
        }
        let unit_price = it.unit_price.get();
        let mut modifiers = Vec::with_capacity(inputs.len());
        let mut unit_total = unit_price;
        for m in inputs {
            let quantity = m.quantity.map_or(1, Int::get);
            let price = m.unit_price.get();
            unit_total = unit_total
                .checked_add(quantity * price)
                .ok_or_else(too_large)?;
            modifiers.push(Modifier {
                name: m.name.into_string(),
                quantity,
                unit_price: price,
            });
        }
        let quantity = it.quantity.get();
        let line_total = quantity.checked_mul(unit_total).ok_or_else(too_large)?;
        subtotal = subtotal.checked_add(line_total).ok_or_else(too_large)?;
        items.push(OrderItem {
            sku: it.sku.into_string(),
            name: it.name.into_string(),
            quantity,
            unit_price,
            modifiers,
            line_total,
        });
    }
    let amount = |a: Option<Amount>| a.map_or(0, Int::get);
    let (tax, delivery_fee, tip, discount) = (
        amount(input.tax),
        amount(input.delivery_fee),
        amount(input.tip),
        amount(input.discount),
    );
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
    Ok(ValidOrder {
        external_id: input.external_id.into_string(),
        provider: input
            .provider
            .map_or_else(|| "generic".to_owned(), ProviderSlug::into_string),
        currency: input.currency.into_string(),
        items,
        subtotal,
        tax,
        delivery_fee,
        tip,
        discount,
        total,
        customer: Customer {
            name: c.name.into_string(),
            email: c.email.map(Email::into_string),
            phone: c.phone.map(Text::into_string),
        },
        delivery: input.delivery.map(Delivery::from),
        notes: input.notes.map(Text::into_string),
        metadata: metadata(input.metadata)?,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn order(mut patch: Value) -> CreateOrder {
        let mut v = json!({
            "external_id": "ext-1",
            "currency": "USD",
            "items": [
                { "sku": "B1", "name": "Burger", "quantity": 2, "unit_price": 1250 },
                { "sku": "F1", "name": "Fries", "quantity": 1, "unit_price": 399 }
            ],
            "customer": { "name": "Ada", "email": "ada@example.com" }
        });
        if let (Some(o), Some(p)) = (v.as_object_mut(), patch.as_object_mut()) {
            o.append(p);
        }
        serde_json::from_value(v).unwrap()
    }

    fn param_of(e: Error) -> String {
        match e {
            Error::Invalid { param, .. } => param.unwrap(),
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn totals_are_computed_server_side() {
        let v = validate(order(json!({}))).unwrap();
        assert_eq!(v.subtotal, 2 * 1250 + 399);
        assert_eq!(v.items[0].line_total, 2500);
        assert_eq!(v.provider, "generic");
    }

    #[test]
    fn modifiers_and_charges_are_totalled_and_a_claimed_total_is_checked() {
        use poem_openapi::types::Example;
        let v = validate(CreateOrder::example()).unwrap();
        // 2 × (950 + 50) = 2000; + 190 + 299 = 2489.
        assert_eq!(v.items[0].line_total, 2000);
        assert_eq!(v.total, 2489);
        let e = validate(order(json!({ "total": 2490 }))).unwrap_err();
        assert!(
            matches!(&e, Error::Invalid { code: "total_mismatch", param: Some(p), .. } if p == "total")
        );
        assert!(e.to_string().contains("2899"), "{e}");
        let generous = order(json!({ "discount": 1_000_000 }));
        assert_eq!(param_of(validate(generous).unwrap_err()), "discount");
    }

    #[test]
    fn the_types_refuse_what_the_schema_refuses() {
        for (field, value) in [
            ("currency", json!("usd")),
            ("provider", json!("Uber Eats")),
            ("external_id", json!("")),
        ] {
            let mut v = serde_json::to_value(json!({
                "external_id": "e", "currency": "USD", "items": [],
                "customer": { "name": "Ada" }
            }))
            .unwrap();
            v[field] = value;
            assert!(serde_json::from_value::<CreateOrder>(v).is_err(), "{field}");
        }
        assert!(Email::new("not-an-email").is_err());
        assert!(Email::new("ada@example.com").is_ok());
        assert!(Email::new(format!("{}@example.com", "a".repeat(65))).is_err());
        assert!(validate(order(json!({ "items": [] }))).is_err());
    }
}
