//! `Announce`: parsing any bytes never panics, and whatever parses re-encodes to a line that
//! parses back to an equal value.
//! The bytes are decoded as the server's UDP thread does: strict UTF-8, trailing space trimmed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use natchat::wire::Announce;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        natchat_fuzz::round_trip::<Announce>(text.trim_end());
    }
});
