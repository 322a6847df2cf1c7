//! The declarative mapping of the `order_feed` action: where each order field is in a
//! platform's body (JSON pointers, constants), amounts converted exactly to minor units.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{
    error::{Error, Result},
    input::pattern_string,
    orders::{
        OrderStatus,
        input::{CreateOrder, CurrencyCode, ProviderSlug},
    },
};

pattern_string!(
    /// A JSON pointer (RFC 6901): `/order/id`.
    Pointer,
    "^(/[^/]{0,100}){1,20}$",
    "a JSON pointer such as `/order/id`",
    400
);

/// How an amount is written in the platform's body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, poem_openapi::Enum)]
#[serde(rename_all = "snake_case")]
#[oai(rename_all = "snake_case")]
pub enum AmountUnit {
    /// Integers already in minor units (cents).
    Minor,
    /// Decimals in the currency's main unit, converted exactly with its ISO 4217 digits:
    /// `9.5` EUR → 950, `1200` JPY → 1200, `1.25` KWD → 1250.
    Major,
}

/// Where one field's value comes from: a JSON pointer, a constant, or both (the constant is
/// the fallback when the pointer finds nothing).
#[derive(Clone, Debug, Default, Serialize, Deserialize, poem_openapi::Object)]
#[serde(deny_unknown_fields)]
#[oai(deny_unknown_fields)]
pub struct Field {
    /// Into the body (into the line item or modifier, for their fields).
    #[oai(nullable)]
    #[serde(default)]
    pub pointer: Option<Pointer>,
    /// A string, number or boolean.
    #[oai(rename = "const", nullable)]
    #[serde(rename = "const", default)]
    pub constant: Option<Value>,
    /// Amounts only: `minor` (default) or `major`.
    #[oai(nullable)]
    #[serde(default)]
    pub unit: Option<AmountUnit>,
}

/// Line items: an array of the body, each item's fields relative to the item.
#[derive(Clone, Debug, Serialize, Deserialize, poem_openapi::Object)]
#[serde(deny_unknown_fields)]
#[oai(deny_unknown_fields)]
pub struct ItemsMapping {
    pub pointer: Pointer,
    pub sku: Field,
    pub name: Field,
    /// Default 1.
    #[oai(nullable)]
    #[serde(default)]
    pub quantity: Option<Field>,
    pub unit_price: Field,
    #[oai(nullable)]
    #[serde(default)]
    pub modifiers: Option<ModifiersMapping>,
}

/// An item's modifiers: an array of the item, each modifier's fields relative to it.
#[derive(Clone, Debug, Serialize, Deserialize, poem_openapi::Object)]
#[serde(deny_unknown_fields)]
#[oai(deny_unknown_fields)]
pub struct ModifiersMapping {
    pub pointer: Pointer,
    pub name: Field,
    /// Default 1.
    #[oai(nullable)]
    #[serde(default)]
    pub quantity: Option<Field>,
    pub unit_price: Field,
}

/// The platform's order status and what its values mean here; other values leave the
/// status as it is.
#[derive(Clone, Debug, Serialize, Deserialize, poem_openapi::Object)]
#[serde(deny_unknown_fields)]
#[oai(deny_unknown_fields)]
pub struct StatusMapping {
    pub pointer: Pointer,
    #[oai(validator(max_properties = 50))]
    pub values: BTreeMap<String, OrderStatus>,
}

/// How a platform's order webhook becomes an order.
#[derive(Clone, Debug, Serialize, Deserialize, poem_openapi::Object)]
#[serde(deny_unknown_fields)]
#[oai(deny_unknown_fields)]
pub struct OrderMapping {
    pub external_id: Field,
    pub currency: Field,
    pub items: ItemsMapping,
    pub customer_name: Field,
    #[oai(nullable)]
    #[serde(default)]
    pub customer_email: Option<Field>,
    #[oai(nullable)]
    #[serde(default)]
    pub customer_phone: Option<Field>,
    #[oai(nullable)]
    #[serde(default)]
    pub delivery_address: Option<Field>,
    #[oai(nullable)]
    #[serde(default)]
    pub delivery_instructions: Option<Field>,
    /// An RFC 3339 time.
    #[oai(nullable)]
    #[serde(default)]
    pub delivery_scheduled_at: Option<Field>,
    #[oai(nullable)]
    #[serde(default)]
    pub notes: Option<Field>,
    #[oai(nullable)]
    #[serde(default)]
    pub tax: Option<Field>,
    #[oai(nullable)]
    #[serde(default)]
    pub delivery_fee: Option<Field>,
    #[oai(nullable)]
    #[serde(default)]
    pub tip: Option<Field>,
    #[oai(nullable)]
    #[serde(default)]
    pub discount: Option<Field>,
    /// The platform's total: the order is refused unless it equals Switchyard's.
    #[oai(nullable)]
    #[serde(default)]
    pub total: Option<Field>,
    #[oai(nullable)]
    #[serde(default)]
    pub status: Option<StatusMapping>,
}

impl OrderMapping {
    /// The checks the types cannot make: every field has a source, constants are scalars.
    /// `param` names the mapping in errors (`inbound.action.mapping`).
    pub fn check(&self, param: &str) -> Result<()> {
        let i = &self.items;
        let mut fields: Vec<(&str, Option<&Field>)> = vec![
            ("external_id", Some(&self.external_id)),
            ("currency", Some(&self.currency)),
            ("customer_name", Some(&self.customer_name)),
            ("customer_email", self.customer_email.as_ref()),
            ("customer_phone", self.customer_phone.as_ref()),
            ("delivery_address", self.delivery_address.as_ref()),
            ("delivery_instructions", self.delivery_instructions.as_ref()),
            ("delivery_scheduled_at", self.delivery_scheduled_at.as_ref()),
            ("notes", self.notes.as_ref()),
            ("tax", self.tax.as_ref()),
            ("delivery_fee", self.delivery_fee.as_ref()),
            ("tip", self.tip.as_ref()),
            ("discount", self.discount.as_ref()),
            ("total", self.total.as_ref()),
            ("items.sku", Some(&i.sku)),
            ("items.name", Some(&i.name)),
            ("items.quantity", i.quantity.as_ref()),
            ("items.unit_price", Some(&i.unit_price)),
        ];
        if let Some(m) = &i.modifiers {
            fields.push(("items.modifiers.name", Some(&m.name)));
            fields.push(("items.modifiers.quantity", m.quantity.as_ref()));
            fields.push(("items.modifiers.unit_price", Some(&m.unit_price)));
        }
        for (name, field) in fields {
            let Some(f) = field else { continue };
            let at = format!("{param}.{name}");
            if f.pointer.is_none() && f.constant.as_ref().is_none_or(Value::is_null) {
                return Err(Error::invalid(
                    "parameter_invalid",
                    at,
                    "A mapped field needs a `pointer`, a `const`, or both.",
                ));
            }
            let scalar = match &f.constant {
                None | Some(Value::Null | Value::Bool(_) | Value::Number(_)) => true,
                Some(Value::String(s)) => s.chars().count() <= 2000,
                Some(_) => false,
            };
            if !scalar {
                return Err(Error::invalid(
                    "parameter_invalid",
                    format!("{at}.const"),
                    "A constant is a string (at most 2000 characters), a number or a boolean.",
                ));
            }
        }
        Ok(())
    }
}

fn failed(field: &str, detail: impl Into<String>) -> Error {
    Error::invalid("mapping_failed", format!("mapping.{field}"), detail)
}

/// The field's value: at its pointer in `root`, else its constant (nulls count as nothing).
fn lookup<'a>(root: &'a Value, f: &'a Field) -> Option<&'a Value> {
    let found = f.pointer.as_ref().and_then(|p| root.pointer(p));
    found
        .filter(|v| !v.is_null())
        .or(f.constant.as_ref().filter(|v| !v.is_null()))
}

fn text(root: &Value, f: Option<&Field>, name: &str) -> Result<Option<Value>> {
    let Some(v) = f.and_then(|f| lookup(root, f)) else {
        return Ok(None);
    };
    match v {
        Value::String(s) => Ok(Some(Value::String(s.trim().to_owned()))),
        Value::Number(_) | Value::Bool(_) => Ok(Some(Value::String(v.to_string()))),
        _ => Err(failed(
            name,
            "The value found is an object or an array, not text.",
        )),
    }
}

fn required(v: Option<Value>, f: &Field, name: &str) -> Result<Value> {
    v.ok_or_else(|| {
        let at = f.pointer.as_ref().map_or("", |p| p.as_str());
        failed(name, format!("Nothing found at `{at}` and no constant."))
    })
}

/// A count (a quantity): an integer, or a string of one.
fn count(root: &Value, f: Option<&Field>, name: &str) -> Result<Option<Value>> {
    let Some(v) = f.and_then(|f| lookup(root, f)) else {
        return Ok(None);
    };
    let n = match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    n.map(|n| Some(json!(n)))
        .ok_or_else(|| failed(name, format!("`{v}` is not a whole number.")))
}

/// An amount in minor units, converted from the platform's `unit`.
fn amount(root: &Value, f: Option<&Field>, name: &str, digits: u32) -> Result<Option<Value>> {
    let Some(f) = f else { return Ok(None) };
    let Some(v) = lookup(root, f) else {
        return Ok(None);
    };
    let raw = match v {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.trim().to_owned(),
        _ => return Err(failed(name, format!("`{v}` is not an amount."))),
    };
    let digits = match f.unit.unwrap_or(AmountUnit::Minor) {
        AmountUnit::Minor => 0,
        AmountUnit::Major => digits,
    };
    to_minor(&raw, digits)
        .map(|n| Some(json!(n)))
        .ok_or_else(|| {
            failed(
                name,
                format!("`{raw}` is not an amount with at most {digits} decimals."),
            )
        })
}

/// `raw` (a plain decimal) times 10^`digits`, exactly: `9.5`, 2 → 950; `9.555`, 2 → none.
pub fn to_minor(raw: &str, digits: u32) -> Option<i64> {
    let (negative, unsigned) = match raw.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, raw),
    };
    let (whole, frac) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !all_digits(whole) || !all_digits(frac) {
        return None;
    }
    let digits = digits as usize;
    let (kept, rest) = frac.split_at(frac.len().min(digits));
    if rest.bytes().any(|b| b != b'0') {
        return None;
    }
    let minor = format!("{whole}{kept:0<digits$}");
    let n: i64 = minor.parse().ok()?;
    Some(if negative { -n } else { n })
}

/// One line item of the body, as the order input has it.
fn map_item(i: &ItemsMapping, it: &Value, digits: u32) -> Result<Value> {
    let mut item = json!({
        "sku": required(text(it, Some(&i.sku), "items.sku")?, &i.sku, "items.sku")?,
        "name": required(text(it, Some(&i.name), "items.name")?, &i.name, "items.name")?,
        "quantity": count(it, i.quantity.as_ref(), "items.quantity")?.unwrap_or(json!(1)),
        "unit_price": required(
            amount(it, Some(&i.unit_price), "items.unit_price", digits)?,
            &i.unit_price,
            "items.unit_price",
        )?,
    });
    if let Some(mm) = &i.modifiers {
        let mods = match it.pointer(mm.pointer.as_str()) {
            Some(Value::Array(a)) => a.as_slice(),
            _ => &[],
        };
        let mut out = Vec::with_capacity(mods.len());
        for md in mods {
            let name = text(md, Some(&mm.name), "items.modifiers.name")?;
            let price = amount(
                md,
                Some(&mm.unit_price),
                "items.modifiers.unit_price",
                digits,
            )?;
            out.push(json!({
                "name": required(name, &mm.name, "items.modifiers.name")?,
                "quantity": count(md, mm.quantity.as_ref(), "items.modifiers.quantity")?,
                "unit_price": required(price, &mm.unit_price, "items.modifiers.unit_price")?,
            }));
        }
        item["modifiers"] = Value::Array(out);
    }
    Ok(item)
}

/// The order `body` describes, and the status it says the order is in.
pub(super) fn map(
    m: &OrderMapping,
    provider: &ProviderSlug,
    body: &Value,
) -> Result<(CreateOrder, Option<OrderStatus>)> {
    let currency = required(
        text(body, Some(&m.currency), "currency")?,
        &m.currency,
        "currency",
    )?;
    let code = CurrencyCode::new(currency.as_str().unwrap_or_default().to_ascii_uppercase())
        .map_err(|e| failed("currency", e))?;
    let digits = code.minor_digits();
    let items_at = m.items.pointer.as_str();
    let Some(Value::Array(raw_items)) = body.pointer(items_at) else {
        return Err(failed(
            "items.pointer",
            format!("No array of line items at `{items_at}`."),
        ));
    };
    let items = raw_items
        .iter()
        .enumerate()
        .map(|(n, it)| {
            map_item(&m.items, it, digits).map_err(|e| match e {
                Error::Invalid {
                    code,
                    param,
                    detail,
                } => Error::Invalid {
                    code,
                    param,
                    detail: format!("Line item {n}: {detail}"),
                },
                e => e,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let external_id = text(body, Some(&m.external_id), "external_id")?;
    let name = text(body, Some(&m.customer_name), "customer_name")?;
    let mut order = json!({
        "external_id": required(external_id, &m.external_id, "external_id")?,
        "provider": provider.as_str(),
        "currency": code.as_str(),
        "items": items,
        "customer": {
            "name": required(name, &m.customer_name, "customer_name")?,
            "email": text(body, m.customer_email.as_ref(), "customer_email")?,
            "phone": text(body, m.customer_phone.as_ref(), "customer_phone")?,
        },
        "notes": text(body, m.notes.as_ref(), "notes")?,
        "tax": amount(body, m.tax.as_ref(), "tax", digits)?,
        "delivery_fee": amount(body, m.delivery_fee.as_ref(), "delivery_fee", digits)?,
        "tip": amount(body, m.tip.as_ref(), "tip", digits)?,
        "discount": amount(body, m.discount.as_ref(), "discount", digits)?,
        "total": amount(body, m.total.as_ref(), "total", digits)?,
    });
    if let Some(address) = text(body, m.delivery_address.as_ref(), "delivery_address")? {
        order["delivery"] = json!({
            "address": address,
            "instructions": text(body, m.delivery_instructions.as_ref(), "delivery_instructions")?,
            "scheduled_at": text(body, m.delivery_scheduled_at.as_ref(), "delivery_scheduled_at")?,
        });
    }
    let input: CreateOrder = serde_json::from_value(order).map_err(|e| {
        Error::invalid(
            "mapping_failed",
            "mapping",
            format!("The mapped order is not valid: {e}."),
        )
    })?;
    let status = m.status.as_ref().and_then(|s| {
        let v = body.pointer(s.pointer.as_str())?;
        let key = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
        s.values.get(&key).copied()
    });
    Ok((input, status))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_convert_exactly() {
        assert_eq!(to_minor("9.5", 2), Some(950));
        assert_eq!(to_minor("9.50", 2), Some(950));
        assert_eq!(to_minor("9.500", 2), Some(950));
        assert_eq!(to_minor("9.555", 2), None);
        assert_eq!(to_minor("1200", 0), Some(1200));
        assert_eq!(to_minor("1.25", 3), Some(1250));
        assert_eq!(to_minor("-3.1", 2), Some(-310));
        assert_eq!(to_minor("1e3", 2), None);
        assert_eq!(to_minor(".5", 2), None);
        assert_eq!(to_minor("99999999999999999999", 2), None);
    }
}
