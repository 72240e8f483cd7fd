//! The room's `#upload <bytes> <name>` header: parsing any line never panics, a header that
//! parses re-encodes to one that parses back the same, and the name it would be stored under
//! is one plain path component: no separator, no leading dot, no control or format character
//! (bidi controls, zero-width characters), at most 200 bytes, never empty.
#![no_main]

use libfuzzer_sys::fuzz_target;
use natchat::room::upload::{sanitize, Header};

fuzz_target!(|data: &[u8]| {
    let line = String::from_utf8_lossy(data);
    let Some(Ok(header)) = Header::parse(&line) else { return };
    let stored = sanitize(&header.name);
    let encoded = header.to_string();
    assert_eq!(Header::parse(&encoded), Some(Ok(header)), "{encoded:?}");
    assert!(!stored.is_empty() && stored.len() <= 200, "{stored:?}");
    assert!(!stored.starts_with('.'), "{stored:?}");
    assert!(!stored.contains(['/', '\\']) && !stored.chars().any(char::is_control), "{stored:?}");
    assert!(!stored.chars().any(natchat::lines::is_format), "{stored:?}");
});
