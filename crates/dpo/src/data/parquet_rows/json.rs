//! One Parquet record -> the JSON object of its JSON Lines twin.

use ::parquet::record::{Field, Row};
use serde_json::{Map, Number, Value};

use super::super::jsonl::JsonRow;
use super::super::BadLine;

/// The row as a JSON object: one key per column, except the null ones (a
/// null column is a missing key, as in the JSON Lines file the `datasets`
/// library would write from the same rows).
pub(super) fn row_object(row: &Row) -> Result<JsonRow, BadLine> {
    group_object(row, None)
}

/// A group's non-null fields as an object. `column` is the top-level column
/// the group sits in, for errors (`None` for the row itself: each field is one).
fn group_object(row: &Row, column: Option<&str>) -> Result<JsonRow, BadLine> {
    let mut object = Map::new();
    for (name, field) in row.get_column_iter() {
        if !matches!(field, Field::Null) {
            object.insert(name.clone(), value(field, column.unwrap_or(name))?);
        }
    }
    Ok(object)
}

/// One field as JSON. Values are read as their physical types (the logical
/// types are dropped by `super::schema`): byte arrays are strings and must be
/// UTF-8; a float that is NaN or infinite is null, as serde_json has it.
fn value(field: &Field, column: &str) -> Result<Value, BadLine> {
    Ok(match field {
        Field::Null => Value::Null,
        Field::Bool(b) => Value::Bool(*b),
        Field::Byte(n) => Value::from(*n),
        Field::Short(n) => Value::from(*n),
        Field::Int(n) | Field::Date(n) | Field::TimeMillis(n) => Value::from(*n),
        Field::Long(n)
        | Field::TimeMicros(n)
        | Field::TimestampMillis(n)
        | Field::TimestampMicros(n) => Value::from(*n),
        Field::UByte(n) => Value::from(*n),
        Field::UShort(n) => Value::from(*n),
        Field::UInt(n) => Value::from(*n),
        Field::ULong(n) => Value::from(*n),
        Field::Float16(x) => float(x.to_f64()),
        Field::Float(x) => float(f64::from(*x)),
        Field::Double(x) => float(*x),
        Field::Decimal(_) => Value::String(field.to_string()),
        Field::Str(text) => Value::String(text.clone()),
        Field::Bytes(bytes) => Value::String(utf8(bytes.data(), column)?),
        Field::Group(row) => Value::Object(group_object(row, Some(column))?),
        Field::ListInternal(list) => Value::Array(
            list.elements()
                .iter()
                .map(|element| value(element, column))
                .collect::<Result<_, _>>()?,
        ),
        Field::MapInternal(map) => {
            let mut object = Map::new();
            for (key, entry) in map.entries() {
                let key = match value(key, column)? {
                    Value::String(text) => text,
                    other => other.to_string(),
                };
                object.insert(key, value(entry, column)?);
            }
            Value::Object(object)
        }
    })
}

/// A float as a JSON number, or null when it has none (NaN, infinities).
fn float(x: f64) -> Value {
    Number::from_f64(x).map_or(Value::Null, Value::Number)
}

/// The bytes of a string value, which must be UTF-8.
fn utf8(bytes: &[u8], column: &str) -> Result<String, BadLine> {
    std::str::from_utf8(bytes)
        .map(str::to_string)
        .map_err(|_| BadLine::ValueNotUtf8 {
            column: column.to_string(),
        })
}
