//! `Request`: parsing any bytes never panics, and whatever parses re-encodes to a line that
//! parses back to an equal value.
//! The bytes are decoded as the TCP line reader does: `String::from_utf8_lossy`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use natchat::wire::Request;

fuzz_target!(|data: &[u8]| {
    natchat_fuzz::round_trip::<Request>(&String::from_utf8_lossy(data));
});
