//! A protocol-neutral value for hub message payloads (arguments, stream items, results).
//!
//! MessagePack can express more than JSON (binary, extension types, non-string map keys, the
//! difference between 32- and 64-bit floats), so [`Value`] is a superset of both: decoding either
//! protocol yields a `Value` without loss, and [`Value::to_json`] / the JSON encoder map the extra
//! kinds the way the official JSON protocol does (binary becomes a base64 string).
//!
//! Integers are kept canonical by every decoder in this crate: [`Value::Int`] for everything that
//! fits an `i64`, [`Value::UInt`] only above `i64::MAX`. Values built by hand need not follow
//! that; both encoders accept either form.

use std::borrow::Cow;
use std::fmt;

use base64::Engine as _;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

use crate::error::ProtocolError;

/// MessagePack extension type id of the standard timestamp extension.
pub const TIMESTAMP_EXT_TYPE: i8 = -1;

/// Upper bound for capacities taken from size hints, so a declared length never causes a large
/// up-front allocation.
const MAX_PREALLOC: usize = 4096;

/// A payload value able to carry anything either hub protocol can express.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Value {
    /// JSON `null` / MessagePack `nil`.
    #[default]
    Nil,
    /// A boolean.
    Bool(bool),
    /// A signed integer (canonical for every integer that fits `i64`).
    Int(i64),
    /// An unsigned integer (canonical only above `i64::MAX`).
    UInt(u64),
    /// A MessagePack float32.
    F32(f32),
    /// A float64 (every non-integral JSON number).
    F64(f64),
    /// A UTF-8 string.
    String(String),
    /// MessagePack `bin` (a base64 string in JSON).
    Binary(Vec<u8>),
    /// An array.
    Array(Vec<Value>),
    /// A map in wire order; keys may be any value in MessagePack, always strings in JSON.
    Map(Vec<(Value, Value)>),
    /// A MessagePack extension value: type id and data.
    Ext(i8, Vec<u8>),
}

impl Value {
    /// A short name of the value's kind, used in error messages ("a string", "a map", ...).
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Nil => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) | Value::UInt(_) => "an integer",
            Value::F32(_) | Value::F64(_) => "a float",
            Value::String(_) => "a string",
            Value::Binary(_) => "binary data",
            Value::Array(_) => "an array",
            Value::Map(_) => "a map",
            Value::Ext(..) => "an extension value",
        }
    }

    /// The string, if this is a [`Value::String`].
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The integer as `i64`, if this is an integer that fits.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::Int(i) => Some(i),
            Value::UInt(u) => i64::try_from(u).ok(),
            _ => None,
        }
    }

    /// The integer as `u64`, if this is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::Int(i) => u64::try_from(i).ok(),
            Value::UInt(u) => Some(u),
            _ => None,
        }
    }

    /// Converts to a JSON value the way the JSON hub protocol writes it: binary becomes a base64
    /// string, timestamps an RFC 3339 string, other extension values the base64 of their data,
    /// non-string map keys are stringified and non-finite floats become `null`.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Value::Nil => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::UInt(u) => J::from(*u),
            // Through the shortest decimal form, so 0.1f32 becomes 0.1 rather than
            // 0.10000000149011612 (this matches what the JSON encoder writes).
            Value::F32(f) => f32_to_f64_decimal(*f)
                .and_then(serde_json::Number::from_f64)
                .map_or(J::Null, J::Number),
            Value::F64(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            Value::String(s) => J::String(s.clone()),
            Value::Binary(b) => J::String(base64_encode(b)),
            Value::Ext(ty, data) => J::String(ext_to_string(*ty, data)),
            Value::Array(items) => J::Array(items.iter().map(Value::to_json).collect()),
            Value::Map(entries) => J::Object(
                entries
                    .iter()
                    .map(|(k, v)| (key_string(k).into_owned(), v.to_json()))
                    .collect(),
            ),
        }
    }
}

/// `f32` to `f64` through the shortest decimal representation the JSON encoder writes for it;
/// `None` when not finite.
fn f32_to_f64_decimal(f: f32) -> Option<f64> {
    if !f.is_finite() {
        return None;
    }
    serde_json::to_string(&f).ok()?.parse::<f64>().ok()
}

/// Standard base64 with padding, as .NET and the JavaScript client use for `byte[]`.
pub(crate) fn base64_encode(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// The JSON text of an extension value: RFC 3339 for a valid timestamp, base64 data otherwise.
fn ext_to_string(ty: i8, data: &[u8]) -> String {
    if ty == TIMESTAMP_EXT_TYPE {
        if let Some(text) = timestamp_to_rfc3339(data) {
            return text;
        }
    }
    base64_encode(data)
}

/// Decodes the MessagePack timestamp extension (4, 8 or 12 bytes of data) and formats it as an
/// RFC 3339 UTC string. `None` for malformed data or years outside 0000..=9999.
fn timestamp_to_rfc3339(data: &[u8]) -> Option<String> {
    let (secs, nanos): (i64, u32) = match data.len() {
        4 => (i64::from(u32::from_be_bytes(data.try_into().ok()?)), 0),
        8 => {
            let raw = u64::from_be_bytes(data.try_into().ok()?);
            let nanos = u32::try_from(raw >> 34).ok()?;
            let secs = i64::try_from(raw & 0x3_ffff_ffff).ok()?;
            (secs, nanos)
        }
        12 => {
            let nanos = u32::from_be_bytes(data.get(..4)?.try_into().ok()?);
            let secs = i64::from_be_bytes(data.get(4..)?.try_into().ok()?);
            (secs, nanos)
        }
        _ => return None,
    };
    rfc3339_utc(secs, nanos)
}

/// `secs` (and `nanos`) since the Unix epoch as an RFC 3339 UTC string
/// (`2026-12-01T22:10:13.5Z`). `None` for `nanos` over a second or years outside 0000..=9999.
pub fn rfc3339_utc(secs: i64, nanos: u32) -> Option<String> {
    if nanos > 999_999_999 {
        return None;
    }
    let days = secs.div_euclid(86_400);
    let secs_of_day = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    if !(0..=9999).contains(&year) {
        return None;
    }
    let (h, m, s) = (secs_of_day / 3600, secs_of_day / 60 % 60, secs_of_day % 60);
    let mut out = format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}");
    if nanos != 0 {
        let frac = format!("{nanos:09}");
        out.push('.');
        out.push_str(frac.trim_end_matches('0'));
    }
    out.push('Z');
    Some(out)
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day) (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    // day is 1..=31 and month 1..=12 by construction.
    (year, month as u32, day as u32)
}

/// The string form of a map key in JSON: strings as they are, scalars in their JSON text, binary
/// in base64, composite keys as compact JSON text.
pub(crate) fn key_string(key: &Value) -> Cow<'_, str> {
    match key {
        Value::String(s) => Cow::Borrowed(s),
        Value::Nil => Cow::Borrowed("null"),
        Value::Bool(true) => Cow::Borrowed("true"),
        Value::Bool(false) => Cow::Borrowed("false"),
        Value::Int(i) => Cow::Owned(i.to_string()),
        Value::UInt(u) => Cow::Owned(u.to_string()),
        Value::F32(_) | Value::F64(_) => Cow::Owned(key.to_json().to_string()),
        Value::Binary(b) => Cow::Owned(base64_encode(b)),
        Value::Ext(ty, data) => Cow::Owned(ext_to_string(*ty, data)),
        Value::Array(_) | Value::Map(_) => Cow::Owned(key.to_json().to_string()),
    }
}

impl From<serde_json::Value> for Value {
    fn from(json: serde_json::Value) -> Self {
        use serde_json::Value as J;
        match json {
            J::Null => Value::Nil,
            J::Bool(b) => Value::Bool(b),
            J::Number(n) => number_to_value(&n),
            J::String(s) => Value::String(s),
            J::Array(items) => Value::Array(items.into_iter().map(Value::from).collect()),
            J::Object(map) => Value::Map(
                map.into_iter()
                    .map(|(k, v)| (Value::String(k), Value::from(v)))
                    .collect(),
            ),
        }
    }
}

impl From<&serde_json::Value> for Value {
    fn from(json: &serde_json::Value) -> Self {
        Value::from(json.clone())
    }
}

impl From<Value> for serde_json::Value {
    fn from(value: Value) -> Self {
        value.to_json()
    }
}

impl From<&Value> for serde_json::Value {
    fn from(value: &Value) -> Self {
        value.to_json()
    }
}

/// A JSON number in canonical form: `Int` if it fits `i64`, `UInt` above, `F64` otherwise.
pub(crate) fn number_to_value(n: &serde_json::Number) -> Value {
    if let Some(i) = n.as_i64() {
        Value::Int(i)
    } else if let Some(u) = n.as_u64() {
        Value::UInt(u)
    } else {
        Value::F64(n.as_f64().unwrap_or(f64::NAN))
    }
}

/// Conversion from `rmpv`'s value (for callers that already decoded with rmpv). Strings that
/// are not valid UTF-8 are converted lossily.
impl From<rmpv::Value> for Value {
    fn from(value: rmpv::Value) -> Self {
        use rmpv::Value as M;
        match value {
            M::Nil => Value::Nil,
            M::Boolean(b) => Value::Bool(b),
            M::Integer(i) => match (i.as_i64(), i.as_u64()) {
                (Some(i), _) => Value::Int(i),
                (None, Some(u)) => Value::UInt(u),
                (None, None) => Value::Nil,
            },
            M::F32(f) => Value::F32(f),
            M::F64(f) => Value::F64(f),
            M::String(s) => Value::String(String::from_utf8_lossy(s.as_bytes()).into_owned()),
            M::Binary(b) => Value::Binary(b),
            M::Array(items) => Value::Array(items.into_iter().map(Value::from).collect()),
            M::Map(entries) => Value::Map(
                entries
                    .into_iter()
                    .map(|(k, v)| (Value::from(k), Value::from(v)))
                    .collect(),
            ),
            M::Ext(ty, data) => Value::Ext(ty, data),
        }
    }
}

impl Value {
    /// Decodes one MessagePack value from the start of `bytes` (bounds-checked, depth-limited to
    /// [`MAX_DEPTH`](crate::MAX_DEPTH)); trailing bytes are ignored.
    pub fn from_msgpack(bytes: &[u8]) -> Result<Value, ProtocolError> {
        crate::msgpack::Reader::new(bytes).value(0)
    }

    /// Encodes this value as MessagePack (smallest representation of each kind).
    pub fn to_msgpack(&self) -> Result<Vec<u8>, ProtocolError> {
        let mut buf = Vec::new();
        crate::msgpack::write_value(&mut buf, self)?;
        Ok(buf)
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::String(s.to_owned())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::String(s)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}

impl From<u64> for Value {
    fn from(u: u64) -> Self {
        match i64::try_from(u) {
            Ok(i) => Value::Int(i),
            Err(_) => Value::UInt(u),
        }
    }
}

impl From<f64> for Value {
    fn from(f: f64) -> Self {
        Value::F64(f)
    }
}

impl From<Vec<u8>> for Value {
    fn from(b: Vec<u8>) -> Self {
        Value::Binary(b)
    }
}

impl From<Vec<Value>> for Value {
    fn from(items: Vec<Value>) -> Self {
        Value::Array(items)
    }
}

/// Serializes in the JSON protocol's mapping (see [`Value::to_json`]); used by the JSON encoder
/// to write values without building an intermediate `serde_json::Value`.
impl Serialize for Value {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Nil => serializer.serialize_unit(),
            Value::Bool(b) => serializer.serialize_bool(*b),
            Value::Int(i) => serializer.serialize_i64(*i),
            Value::UInt(u) => serializer.serialize_u64(*u),
            Value::F32(f) if f.is_finite() => serializer.serialize_f32(*f),
            Value::F64(f) if f.is_finite() => serializer.serialize_f64(*f),
            Value::F32(_) | Value::F64(_) => serializer.serialize_unit(),
            Value::String(s) => serializer.serialize_str(s),
            Value::Binary(b) => serializer.serialize_str(&base64_encode(b)),
            Value::Ext(ty, data) => serializer.serialize_str(&ext_to_string(*ty, data)),
            Value::Array(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Value::Map(entries) => {
                let mut map = serializer.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    map.serialize_entry(key_string(k).as_ref(), v)?;
                }
                map.end()
            }
        }
    }
}

/// Deserializes any self-describing input (used on JSON payloads) into canonical [`Value`]s.
impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f32<E: de::Error>(self, v: f32) -> Result<Value, E> {
        Ok(Value::F32(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(Value::F64(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Value, E> {
        Ok(Value::Binary(v.to_vec()))
    }

    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Value, E> {
        Ok(Value::Binary(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Nil)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Nil)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(MAX_PREALLOC));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0).min(MAX_PREALLOC));
        while let Some(entry) = map.next_entry()? {
            entries.push(entry);
        }
        Ok(Value::Map(entries))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Arbitrary values in the canonical form MessagePack decoding produces.
    pub(crate) fn arb_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Nil),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::Int),
            (i64::MAX as u64 + 1..=u64::MAX).prop_map(Value::UInt),
            any::<f32>()
                .prop_filter("NaN never compares equal", |f| !f.is_nan())
                .prop_map(Value::F32),
            any::<f64>()
                .prop_filter("NaN never compares equal", |f| !f.is_nan())
                .prop_map(Value::F64),
            ".{0,40}".prop_map(Value::String),
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(Value::Binary),
            (any::<i8>(), proptest::collection::vec(any::<u8>(), 0..20))
                .prop_map(|(t, d)| Value::Ext(t, d)),
        ];
        leaf.prop_recursive(4, 48, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                proptest::collection::vec((inner.clone(), inner), 0..6).prop_map(Value::Map),
            ]
        })
    }

    /// Arbitrary JSON values whose numbers survive a text round trip exactly.
    pub(crate) fn arb_json() -> impl Strategy<Value = serde_json::Value> {
        use serde_json::Value as J;
        let leaf = prop_oneof![
            Just(J::Null),
            any::<bool>().prop_map(J::Bool),
            any::<i64>().prop_map(J::from),
            any::<u64>().prop_map(J::from),
            (any::<i32>(), 0i32..6).prop_map(|(m, e)| J::from(f64::from(m) / 10f64.powi(e))),
            ".{0,40}".prop_map(J::String),
        ];
        leaf.prop_recursive(4, 48, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..8).prop_map(J::Array),
                proptest::collection::btree_map(".{0,10}", inner, 0..6)
                    .prop_map(|m| J::Object(m.into_iter().collect())),
            ]
        })
    }

    #[test]
    fn json_numbers_become_canonical_values() {
        assert_eq!(Value::from(serde_json::json!(5)), Value::Int(5));
        assert_eq!(Value::from(serde_json::json!(-5)), Value::Int(-5));
        assert_eq!(
            Value::from(serde_json::json!(u64::MAX)),
            Value::UInt(u64::MAX)
        );
        assert_eq!(Value::from(serde_json::json!(1.5)), Value::F64(1.5));
        assert_eq!(Value::from(u64::MAX / 2), Value::Int(i64::MAX));
    }

    #[test]
    fn to_json_maps_msgpack_only_kinds() {
        let v = Value::Map(vec![
            (Value::Int(1), Value::Binary(vec![1, 2, 3])),
            (Value::Bool(true), Value::F32(0.1)),
            (Value::Nil, Value::F64(f64::NAN)),
            (Value::from("s"), Value::Ext(5, vec![0xff])),
        ]);
        assert_eq!(
            v.to_json(),
            serde_json::json!({"1": "AQID", "true": 0.1, "null": null, "s": "/w=="})
        );
        // The serializer agrees with to_json.
        let text = serde_json::to_string(&v).expect("serialize");
        let reparsed: serde_json::Value = serde_json::from_str(&text).expect("parse");
        assert_eq!(reparsed, v.to_json());
    }

    #[test]
    fn timestamps_become_rfc3339() {
        // timestamp32: 2021-01-01T00:00:00Z
        let ts32 = Value::Ext(-1, 1_609_459_200u32.to_be_bytes().to_vec());
        assert_eq!(ts32.to_json(), serde_json::json!("2021-01-01T00:00:00Z"));
        // timestamp64 with 500 ms.
        let raw: u64 = (500_000_000u64 << 34) | 951_782_400; // 2000-02-29T00:00:00Z
        let ts64 = Value::Ext(-1, raw.to_be_bytes().to_vec());
        assert_eq!(ts64.to_json(), serde_json::json!("2000-02-29T00:00:00.5Z"));
        // timestamp96 before the epoch.
        let mut data = 1u32.to_be_bytes().to_vec();
        data.extend_from_slice(&(-1i64).to_be_bytes());
        let ts96 = Value::Ext(-1, data);
        assert_eq!(
            ts96.to_json(),
            serde_json::json!("1969-12-31T23:59:59.000000001Z")
        );
        // Malformed data falls back to base64.
        assert_eq!(Value::Ext(-1, vec![1]).to_json(), serde_json::json!("AQ=="));
    }

    proptest! {
        #[test]
        fn json_value_conversion_round_trips(json in arb_json()) {
            let value = Value::from(json.clone());
            prop_assert_eq!(value.to_json(), json);
        }

        #[test]
        fn to_json_and_serialize_never_fail(value in arb_value()) {
            let json = value.to_json();
            let text = serde_json::to_string(&value).expect("serialize");
            let reparsed: serde_json::Value = serde_json::from_str(&text).expect("parse");
            // Same shape either way (floats may differ in the last digit after a text trip).
            prop_assert_eq!(std::mem::discriminant(&reparsed), std::mem::discriminant(&json));
        }
    }
}
