//! What the wire fuzz targets share: the round-trip property.

use std::fmt::{Debug, Display};
use std::str::FromStr;

/// Parsing `text` never panics, and whatever parses re-encodes (`Display`) to text that
/// parses back to an equal value.
pub fn round_trip<T>(text: &str)
where
    T: FromStr + Display + PartialEq + Debug,
    T::Err: Debug,
{
    if let Ok(value) = text.parse::<T>() {
        let encoded = value.to_string();
        let again = encoded.parse::<T>();
        assert!(
            matches!(&again, Ok(v) if *v == value),
            "{text:?} parsed as {value:?}, but its encoding {encoded:?} parses as {again:?}"
        );
    }
}
