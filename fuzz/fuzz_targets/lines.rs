//! `LineReader`: reading any stream never panics, and yields exactly the lines of a simple
//! model of its rules: split at `\n`, drop one `\r` before it, stop with `TooLong` at the
//! first line of more than `cap` raw bytes, decode each line with `from_utf8_lossy`, and keep
//! a last line without `\n` (or, with `complete_lines_only`, never return it). So no line
//! yielded is longer than `cap` raw bytes.
//!
//! Input: byte 0 is the cap (0..=255); byte 1 says how the stream is read: each `read`
//! returns at most (low 6 bits + 1) bytes, bit 6 asks for `complete_lines_only`, bit 7 makes
//! every other `read` fail with `Interrupted` (which the reader must retry); the rest is the
//! stream.
#![no_main]

use libfuzzer_sys::fuzz_target;
use natchat::lines::{LineError, LineReader};
use std::io::{self, Read};

/// A stream that hands out its bytes a few at a time, sometimes interrupted.
struct Trickle<'a> {
    data: &'a [u8],
    chunk: usize,
    interrupt: bool,
    calls: u64,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.calls += 1;
        if self.interrupt && self.calls % 2 == 1 {
            return Err(io::ErrorKind::Interrupted.into());
        }
        let n = self.chunk.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

fuzz_target!(|data: &[u8]| {
    let [cap, mode, stream @ ..] = data else {
        return;
    };
    let cap = *cap as usize;
    let complete_only = mode & 0x40 != 0;
    let trickle = Trickle {
        data: stream,
        chunk: (mode & 0x3f) as usize + 1,
        interrupt: mode & 0x80 != 0,
        calls: 0,
    };
    let mut reader = LineReader::new(trickle, cap);
    if complete_only {
        reader = reader.complete_lines_only();
    }
    let mut rest = stream;
    while !rest.is_empty() {
        // The model's next line: raw, without its '\n', and whether a '\n' ended it.
        let end = rest.iter().position(|&b| b == b'\n');
        let raw = &rest[..end.unwrap_or(rest.len())];
        rest = &rest[end.map_or(rest.len(), |i| i + 1)..];
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        let got = reader.read_line();
        if let Ok(Some(text)) = &got {
            assert!(line.len() <= cap, "a line of {} raw bytes, cap {cap}", line.len());
            assert!(text.len() <= 3 * cap, "a line of {} bytes, cap {cap}", text.len());
        }
        match got {
            // A cut-short last line: dropped, or refused if already too long.
            _ if complete_only && end.is_none() => match got {
                Ok(None) => return,
                Err(LineError::TooLong { max }) if max == cap && raw.len() > cap => return,
                other => panic!("a last line cut short ({raw:?}) read as {other:?}"),
            },
            Ok(Some(text)) => assert_eq!(text, String::from_utf8_lossy(line)),
            Err(LineError::TooLong { max }) if max == cap && line.len() > cap => {
                return; // the stream is out of sync: nothing more is read
            }
            other => panic!("line {line:?} read as {other:?}"),
        }
    }
    assert!(matches!(reader.read_line(), Ok(None)), "a line after the end");
});
