//! The schema the rows are read with: the file's own, with every leaf
//! column's logical type dropped, so that the record API hands out each
//! value as its physical type (strings as bytes, checked as UTF-8 by
//! [`super::json`], one row at a time) and never reaches the conversions
//! it leaves unimplemented (it panics on those).

use std::sync::Arc;

use ::parquet::basic::Type as PhysicalType;
use ::parquet::schema::types::Type;

/// `schema` with its leaves' logical and converted types removed; groups
/// (lists, maps, structs) keep theirs. A group with no field is refused (the
/// record API cannot read one).
pub(super) fn plain_schema(schema: &Type) -> Result<Type, String> {
    let info = schema.get_basic_info();
    let built = match schema {
        Type::PrimitiveType {
            physical_type,
            type_length,
            ..
        } => {
            let mut leaf = Type::primitive_type_builder(schema.name(), *physical_type);
            if info.has_repetition() {
                leaf = leaf.with_repetition(info.repetition());
            }
            if *physical_type == PhysicalType::FIXED_LEN_BYTE_ARRAY {
                leaf = leaf.with_length(*type_length);
            }
            leaf.build()
        }
        Type::GroupType { fields, .. } => {
            if fields.is_empty() {
                return Err(format!("the group '{}' has no field", schema.name()));
            }
            let fields = fields
                .iter()
                .map(|field| plain_schema(field).map(Arc::new))
                .collect::<Result<Vec<_>, _>>()?;
            let mut group = Type::group_type_builder(schema.name())
                .with_converted_type(info.converted_type())
                .with_logical_type(info.logical_type_ref().cloned())
                .with_fields(fields);
            if info.has_repetition() {
                group = group.with_repetition(info.repetition());
            }
            group.build()
        }
    };
    built.map_err(|e| e.to_string())
}
