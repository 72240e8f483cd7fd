//! Reading text lines from a TCP stream, safely.
//!
//! Every TCP reader in natchat (registration server, P2P client, room server, room client)
//! reads through [`LineReader`], so that one set of rules holds everywhere:
//! - a line longer than the cap is an error, and memory never grows past the cap, however
//!   long the sender keeps going without a newline;
//! - `\n` ends a line and a `\r` before it is dropped, so `nc` and telnet both work;
//! - invalid UTF-8 is replaced by U+FFFD rather than rejected: chat is for people;
//! - control characters and Unicode format characters are replaced by [`clean`] before
//!   anything is shown on a terminal, so nobody can send escape sequences to someone else's
//!   screen, nor make text read otherwise than it is (bidi overrides, zero-width characters);
//! - a reader that must finish by a deadline, however slowly the bytes trickle in, reads
//!   through a [`DeadlineStream`].

use std::fmt;
use std::io::{self, BufRead, BufReader, Read};
use std::net::TcpStream;
use std::time::Instant;

/// Why a line could not be read.
#[derive(Debug)]
pub enum LineError {
    /// The line ran past the cap without a newline. The stream is no longer in sync.
    TooLong {
        /// The cap, in bytes.
        max: usize,
    },
    /// Reading failed, timed out, or the stream ended mid-line.
    Io(io::Error),
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LineError::TooLong { max } => write!(f, "line longer than {max} bytes"),
            LineError::Io(e) => f.write_str(&crate::failure::in_words(e)),
        }
    }
}

impl std::error::Error for LineError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LineError::TooLong { .. } => None,
            LineError::Io(e) => Some(e),
        }
    }
}

impl From<io::Error> for LineError {
    fn from(e: io::Error) -> Self {
        LineError::Io(e)
    }
}

/// Whether `e` is a read timeout running out (which Linux reports as `WouldBlock`).
pub fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// A buffered reader that yields lines of at most `max` bytes.
pub struct LineReader<R> {
    inner: BufReader<R>,
    max: usize,
    line: Vec<u8>,
    complete_only: bool,
}

impl<R: Read> LineReader<R> {
    /// `max` is the longest line accepted, without its line ending.
    pub fn new(inner: R, max: usize) -> Self {
        LineReader {
            // A small buffer: ten thousand idle connections should not cost 80 MB. Chat lines
            // are short, and reads larger than the buffer (uploads) bypass it.
            inner: BufReader::with_capacity(1024, inner),
            max,
            line: Vec::new(),
            complete_only: false,
        }
    }

    /// Drops a last line that the end of the stream cuts short, instead of returning it. For
    /// a server that relays lines: a sender that dies, or is cut off, in the middle of a line
    /// must not have half a message delivered as if it were whole.
    pub fn complete_lines_only(mut self) -> Self {
        self.complete_only = true;
        self
    }

    /// The next line without its `\n` or `\r\n`, or `None` at a clean end of stream.
    /// A last line without a newline still counts as a line, unless
    /// [`complete_lines_only`](Self::complete_lines_only) was asked for.
    pub fn read_line(&mut self) -> Result<Option<String>, LineError> {
        // `self.line` holds what a call that timed out had read of a line: go on from there.
        loop {
            let available = match self.inner.fill_buf() {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            };
            if available.is_empty() {
                if self.line.is_empty() || self.complete_only {
                    self.line.clear();
                    return Ok(None);
                }
                break;
            }
            let (chunk, found) = match available.iter().position(|&b| b == b'\n') {
                Some(i) => (&available[..i], Some(i + 1)),
                None => (available, None),
            };
            // The cap counts a possible trailing '\r' as part of the line ending.
            if self.line.len() + chunk.len() > self.max + 1 {
                self.line.clear();
                return Err(LineError::TooLong { max: self.max });
            }
            self.line.extend_from_slice(chunk);
            let used = found.unwrap_or(chunk.len());
            self.inner.consume(used);
            if found.is_some() {
                break;
            }
        }
        let mut line = std::mem::take(&mut self.line);
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if line.len() > self.max {
            return Err(LineError::TooLong { max: self.max });
        }
        Ok(Some(String::from_utf8_lossy(&line).into_owned()))
    }

    /// The buffered reader underneath, for reading raw bytes (a file upload) that follow
    /// a line. Bytes already buffered are not lost.
    pub fn raw(&mut self) -> &mut BufReader<R> {
        &mut self.inner
    }

    /// The stream underneath, for settings such as read timeouts.
    pub fn get_ref(&self) -> &R {
        self.inner.get_ref()
    }

    /// The stream underneath, to change it (a [`DeadlineStream`]'s deadline). Bytes already
    /// buffered stay buffered.
    pub fn get_mut(&mut self) -> &mut R {
        self.inner.get_mut()
    }
}

/// A TCP stream whose reads all end by one absolute deadline, however the bytes trickle in.
///
/// Why: a socket read timeout bounds one `read` call, and each byte that arrives ends the
/// call. [`LineReader::read_line`] reads until a newline, one call after another, so with a
/// plain read timeout a sender trickling a byte every few seconds restarts the clock with
/// each byte and keeps the line, and the connection, open for ever: slowloris. Setting the
/// timeout to the time left before each `read_line` does not help, for the same reason.
/// Here every underlying `read` first sets the socket's read timeout to the time left until
/// the deadline, and once it has passed fails with [`io::ErrorKind::TimedOut`] without
/// reading, so the deadline holds from whenever it was set, whatever arrives meanwhile.
///
/// Without a deadline it is the plain stream, and costs nothing more.
pub struct DeadlineStream<'a> {
    stream: &'a TcpStream,
    deadline: Option<Instant>,
}

impl<'a> DeadlineStream<'a> {
    /// Reads from `stream`, with no deadline yet.
    pub fn new(stream: &'a TcpStream) -> Self {
        DeadlineStream {
            stream,
            deadline: None,
        }
    }

    /// Every read from now on must end by `deadline`; `None` lifts it, and with it the
    /// socket's read timeout.
    pub fn set_deadline(&mut self, deadline: Option<Instant>) -> io::Result<()> {
        self.deadline = deadline;
        if deadline.is_none() {
            self.stream.set_read_timeout(None)?;
        }
        Ok(())
    }

    /// The stream underneath.
    pub fn stream(&self) -> &'a TcpStream {
        self.stream
    }
}

impl Read for DeadlineStream<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(deadline) = self.deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            // A zero timeout would mean "none" to the socket (and is refused by std).
            if left.is_zero() {
                return Err(io::ErrorKind::TimedOut.into());
            }
            self.stream.set_read_timeout(Some(left))?;
        }
        let mut stream = self.stream;
        stream.read(buf)
    }
}

/// `text` with every character that [`is_hidden`] says must not be shown replaced by U+FFFD,
/// so that what one user typed cannot move another user's cursor, clear the screen or ring
/// the bell, nor make a line read otherwise than it is written. Tab is kept.
pub fn clean(text: &str) -> String {
    text.chars()
        .map(|c| if is_hidden(c) { '\u{FFFD}' } else { c })
        .collect()
}

/// Whether `c` must not reach a screen as itself: a control character other than tab (it
/// moves the cursor, clears the screen, starts an escape sequence) or a format character
/// ([`is_format`]: it reorders or hides text without showing itself).
pub fn is_hidden(c: char) -> bool {
    (c.is_control() && c != '\t') || is_format(c)
}

/// Whether `c` is a Unicode format character (general category Cf): invisible characters
/// that change how the text around them is shown. Among them are the bidi controls (U+202A
/// to U+202E, U+2066 to U+2069, U+200E, U+200F, U+061C), which can show a name ending in
/// `.exe` as one ending in `.txt`, or reorder a line to say something it does not, and the
/// zero-width ones (U+200B to U+200D, U+2060, U+FEFF), which make different texts look the
/// same.
///
/// All of them are replaced, U+200D (zero-width joiner) and U+200C (non-joiner) too, although
/// emoji sequences (a family: man, ZWJ, woman, ZWJ, girl) and some scripts (Persian, Indic)
/// use them to join or part letters. Keeping them would let any text carry characters no one
/// can see, and telling a harmless joiner from a hiding one needs the emoji and script tables
/// of Unicode, which std does not have. The cost is visible and harmless: a family emoji
/// shows as its members with U+FFFD between them. The same goes for the tag characters
/// (U+E0020 to U+E007F) that spell out regional flags such as England's.
pub fn is_format(c: char) -> bool {
    let c = u32::from(c);
    // Below the first (U+00AD, the soft hyphen) there is none: plain ASCII text, the most
    // of what a chat carries, costs one comparison a character.
    if c < FORMAT[0].0 {
        return false;
    }
    FORMAT
        .binary_search_by(|&(first, last)| {
            if last < c {
                std::cmp::Ordering::Less
            } else if first > c {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_ok()
}

/// Every code point of general category Cf, as sorted, disjoint, inclusive ranges.
///
/// Made from Python 3.11's `unicodedata` (Unicode 14.0.0), with `unicodedata.category(c) ==
/// "Cf"` over every code point, then U+13439 to U+1343F added (Egyptian hieroglyph format
/// controls, Cf since Unicode 15.0). Perl 5.36's Unicode data (also 14.0) agrees. A code
/// point that a later Unicode makes Cf passes until it is added here.
const FORMAT: &[(u32, u32)] = &[
    (0x00AD, 0x00AD),
    (0x0600, 0x0605),
    (0x061C, 0x061C),
    (0x06DD, 0x06DD),
    (0x070F, 0x070F),
    (0x0890, 0x0891),
    (0x08E2, 0x08E2),
    (0x180E, 0x180E),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x2064),
    (0x2066, 0x206F),
    (0xFEFF, 0xFEFF),
    (0xFFF9, 0xFFFB),
    (0x110BD, 0x110BD),
    (0x110CD, 0x110CD),
    (0x13430, 0x1343F),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0001, 0xE0001),
    (0xE0020, 0xE007F),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[u8], max: usize) -> Vec<Result<String, String>> {
        let mut reader = LineReader::new(input, max);
        let mut out = Vec::new();
        loop {
            match reader.read_line() {
                Ok(Some(line)) => out.push(Ok(line)),
                Ok(None) => break,
                Err(e) => {
                    out.push(Err(e.to_string()));
                    break;
                }
            }
        }
        out
    }

    #[test]
    fn splits_on_lf_and_crlf_and_keeps_a_last_partial_line() {
        assert_eq!(
            lines(b"one\r\ntwo\n\nthree", 10),
            vec![
                Ok("one".into()),
                Ok("two".into()),
                Ok("".into()),
                Ok("three".into())
            ]
        );
    }

    /// A stream that fails with `WouldBlock` (a read timeout) between its pieces.
    struct Stalling(Vec<&'static [u8]>, bool);

    impl Read for Stalling {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.1 = !self.1;
            if self.1 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let Some(piece) = self.0.first_mut() else {
                return Ok(0);
            };
            let n = piece.len().min(buf.len());
            buf[..n].copy_from_slice(&piece[..n]);
            *piece = &piece[n..];
            if piece.is_empty() {
                self.0.remove(0);
            }
            Ok(n)
        }
    }

    #[test]
    fn a_read_timeout_in_the_middle_of_a_line_loses_nothing() {
        let mut reader =
            LineReader::new(Stalling(vec![b"READY 1.2", b".3.4:5\nnext\n"], false), 50);
        let mut lines = Vec::new();
        for _ in 0..10 {
            match reader.read_line() {
                Ok(Some(line)) => lines.push(line),
                Ok(None) => break,
                Err(LineError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(lines, ["READY 1.2.3.4:5", "next"]);
    }

    #[test]
    fn a_last_line_cut_short_can_be_dropped() {
        let mut reader = LineReader::new(&b"whole\r\nhalf a li"[..], 10).complete_lines_only();
        assert_eq!(reader.read_line().unwrap(), Some("whole".into()));
        assert_eq!(reader.read_line().unwrap(), None);
    }

    #[test]
    fn a_line_over_the_cap_is_an_error_and_exactly_the_cap_is_fine() {
        assert_eq!(lines(b"12345\r\n", 5), vec![Ok("12345".into())]);
        assert_eq!(
            lines(b"123456\n", 5),
            vec![Err("line longer than 5 bytes".into())]
        );
        let endless = vec![b'x'; 1 << 20];
        assert_eq!(lines(&endless, 100).len(), 1);
        assert!(lines(&endless, 100)[0].is_err());
    }

    #[test]
    fn invalid_utf8_is_replaced_and_control_characters_are_cleaned() {
        assert_eq!(lines(b"a\xffb\n", 10), vec![Ok("a\u{FFFD}b".into())]);
        assert_eq!(clean("hi\x1b[2J\x07\tok"), "hi\u{FFFD}[2J\u{FFFD}\tok");
    }

    #[test]
    fn a_deadline_holds_however_slowly_bytes_trickle_in() {
        use std::io::Write;
        use std::net::TcpListener;
        use std::time::Duration;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut sender = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (receiver, _) = listener.accept().unwrap();
        // A byte every 50 ms, never a newline, for 2 s: far past the deadline.
        let trickler = std::thread::spawn(move || {
            for _ in 0..40 {
                if sender.write_all(b"x").is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let start = Instant::now();
        let mut stream = DeadlineStream::new(&receiver);
        stream
            .set_deadline(Some(start + Duration::from_millis(300)))
            .unwrap();
        let mut reader = LineReader::new(stream, 100);
        match reader.read_line() {
            Err(LineError::Io(e)) if is_timeout(&e) => {}
            other => panic!("{other:?}"),
        }
        let took = start.elapsed();
        assert!(took < Duration::from_millis(1500), "{took:?}");
        // Lifted, the stream reads on with no timeout.
        reader.get_mut().set_deadline(None).unwrap();
        assert_eq!(receiver.read_timeout().unwrap(), None);
        drop(receiver);
        trickler.join().unwrap();
    }

    #[test]
    fn format_characters_are_cleaned_and_nothing_else_is() {
        assert_eq!(
            clean("txt\u{202E}exe.\u{200B}a\u{200D}b\u{FEFF}"),
            "txt\u{FFFD}exe.\u{FFFD}a\u{FFFD}b\u{FFFD}"
        );
        // The ends of every range are format characters; the code points around them are not.
        for &(first, last) in FORMAT {
            for c in [first, last] {
                assert!(is_format(char::from_u32(c).unwrap()), "{c:X}");
            }
            for c in [first - 1, last + 1] {
                assert!(!is_format(char::from_u32(c).unwrap()), "{c:X}");
            }
        }
        assert!(FORMAT.windows(2).all(|w| w[0].1 + 1 < w[1].0));
        assert!(FORMAT.iter().all(|&(first, last)| first <= last));
        let plain = "héllo wörld ✓ 日本語 مرحبا 👍\t";
        assert_eq!(clean(plain), plain);
    }
}
