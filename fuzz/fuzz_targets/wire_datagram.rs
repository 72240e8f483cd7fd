//! `Datagram`: parsing any bytes never panics, and whatever parses re-encodes to a line that
//! parses back to an equal value.
//! The bytes are decoded as the client's UDP thread does: strict UTF-8.
#![no_main]

use libfuzzer_sys::fuzz_target;
use natchat::wire::Datagram;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        natchat_fuzz::round_trip::<Datagram>(text);
    }
});
