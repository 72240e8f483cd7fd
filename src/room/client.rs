//! `natchat room-client`: sends what the user types, prints what the server sends.
//!
//! ```text
//!  stdin thread ── lines ──▶ main thread ──▶ socket: messages, and #upload files streamed
//!  socket thread ──────────▶ Console: every line from the server, cleaned
//!                └─ `closed` disconnects when the server closes ──▶ main thread
//! ```
//!
//! The socket thread prints on its own, so lines keep arriving while the main thread is busy
//! streaming a file: a long upload cannot make this client a reader too slow for the room.
//! On a terminal the user types after a `[You] ` prompt, and the server's echo of the user's
//! own line is not printed again (see [`Console`]); piped, every line is printed as it comes.
//!
//! `#upload <path>` takes the path as a shell user would type it: `'my file.png'` and
//! `"my file.png"` name `my file.png`. Only a regular file is sent: a directory, a FIFO or a
//! device is refused with one line, before anything reaches the server.
//!
//! Endings: end of input (Ctrl+D) leaves the room and exits 0, after the server's last lines;
//! Ctrl+C prints `exit` and exits 0; when the server goes, `server closed` is the one
//! error line and the exit status is 1, as for any session that ended against the user's will.

use super::console::Console;
use super::upload::{command_argument, Header};
use super::MAX_LINE;
use crate::failure::{connect, in_words, spawn, Failure};
use crate::lines::{clean, LineError, LineReader};
use crossbeam_channel::{bounded, select, Receiver};
use std::fmt;
use std::fs::{File, FileType, OpenOptions};
use std::io::{self, BufRead, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The longest line accepted from the server: a message of [`MAX_LINE`] bytes can triple
/// when each control character or invalid byte becomes a three-byte U+FFFD, plus its prefix.
const MAX_SERVER_LINE: usize = 4 * MAX_LINE;

/// How long leaving waits for the server's last lines (the echo of our own last message).
const LEAVE_WAIT: Duration = Duration::from_secs(2);

/// `O_NONBLOCK`, as Linux numbers it on x86, ARM and RISC-V (std has no name for it, and
/// one constant is not worth the libc crate). Without it, opening a FIFO for reading waits
/// for a writer, for ever if none comes; on a regular file it changes nothing.
const O_NONBLOCK: i32 = 0o4000;

/// Connects, then relays between the user and the server until one of them ends.
pub fn run(host: &str, port: u16) -> Result<(), Failure> {
    let (stream, _) = connect(host, port, "chat server", "room-server")?;
    exit_on_interrupt()?;
    let reader = stream.try_clone().map_err(|e| {
        Failure::runtime(format!(
            "cannot read from the chat server: {}",
            in_words(&e)
        ))
    })?;
    let console = Arc::new(Console::new());
    let closed = spawn_printer(reader, console.clone())?;
    let input = spawn_input()?;
    let ended = loop {
        select! {
            recv(input) -> line => match line {
                Ok(line) => if let Err(e) = act(&stream, &line, &console) {
                    break Err(e);
                },
                Err(_) => break leave(&stream, &closed, &console),
            },
            recv(closed) -> _ => break Err(server_closed()),
        }
    };
    // The error line goes to stderr at the start of a row, not after a prompt.
    console.end();
    ended
}

/// On Ctrl+C: print `exit` and end at once, with status 0. Nothing else needs doing: the OS
/// closes the socket, and the server sees an ordinary end of stream (a user left).
fn exit_on_interrupt() -> Result<(), Failure> {
    ctrlc::set_handler(|| {
        // Stdout's lock, held to the end, keeps the socket thread's lines (and the prompt)
        // from landing between the `^C` row's end and `exit`.
        let _out = std::io::stdout().lock();
        crate::output::end_interrupted_line();
        crate::say!("exit");
        std::process::exit(0);
    })
    .map_err(|e| Failure::runtime(format!("cannot catch Ctrl+C: {e}")))
}

/// One line typed by the user: a message, or `#upload <path>`.
fn act(mut stream: &TcpStream, line: &str, console: &Console) -> Result<(), Failure> {
    if let Some(argument) = command_argument(line) {
        return upload(stream, unquote(argument), console);
    }
    if line.trim().is_empty() {
        // Not sent, so no echo will bring the next prompt.
        console.prompt();
        return Ok(());
    }
    if line.len() > MAX_LINE {
        console.line(&format!(
            "Message too long ({} bytes; at most {MAX_LINE}); not sent.",
            line.len()
        ));
        return Ok(());
    }
    stream
        .write_all(format!("{line}\n").as_bytes())
        .map_err(|_| server_closed())
}

/// The path in `#upload <path>`, as a shell user types it: one pair of matching quotes
/// around the whole of it is removed (`'google.png'`, `"my file.png"`), and nothing else.
fn unquote(argument: &str) -> &str {
    ['\'', '"']
        .into_iter()
        .find_map(|quote| argument.strip_prefix(quote)?.strip_suffix(quote))
        .unwrap_or(argument)
}

/// Streams the file at `path`: the header, then its bytes. A file that cannot be opened, or
/// is not a regular file, is reported here, and nothing is sent.
fn upload(mut stream: &TcpStream, path: &str, console: &Console) -> Result<(), Failure> {
    if path.is_empty() {
        console.line("Usage: #upload <path>");
        return Ok(());
    }
    let (mut file, bytes) = match open_regular(path) {
        Ok(opened) => opened,
        Err(why) => {
            console.line(&format!("Cannot upload {path}: {why}."));
            return Ok(());
        }
    };
    let name = Path::new(path)
        .file_name()
        .unwrap_or_default()
        .to_string_lossy();
    let header = Header {
        bytes,
        name: clean(&name),
    };
    stream
        .write_all(format!("{header}\n").as_bytes())
        .map_err(|_| server_closed())?;

    let mut buf = vec![0; 64 * 1024];
    let mut left = bytes;
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let read = match file.read(&mut buf[..want]) {
            Ok(0) => Err(io::Error::new(
                ErrorKind::UnexpectedEof,
                "the file got shorter",
            )),
            Ok(read) => Ok(read),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => Err(e),
        };
        // The server expects the announced bytes: the only way out is to hang up, and
        // then it drops the partial file.
        let read = read.map_err(|e| {
            Failure::runtime(format!(
                "reading {path} failed after {} of {bytes} bytes were sent ({}); \
                 disconnected, so that the server drops the partial upload",
                bytes - left,
                in_words(&e)
            ))
        })?;
        stream
            .write_all(&buf[..read])
            .map_err(|_| server_closed())?;
        left -= read as u64;
    }
    Ok(())
}

/// Why a file cannot be uploaded.
#[derive(Debug)]
enum Unreadable {
    /// Opening it or reading its metadata failed.
    Io(io::Error),
    /// It is not a regular file: what it is instead, in words.
    NotRegular(&'static str),
}

impl fmt::Display for Unreadable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unreadable::Io(e) => f.write_str(&in_words(e)),
            Unreadable::NotRegular(what) => write!(f, "it is {what}, not a regular file"),
        }
    }
}

/// The file at `path` and its size, if it is a regular file that can be read. Opening never
/// blocks, and the kind of file is checked on the opened file itself, so it cannot be
/// swapped for another between the check and the reading.
fn open_regular(path: &str) -> Result<(File, u64), Unreadable> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(O_NONBLOCK)
        .open(path)
        .map_err(Unreadable::Io)?;
    let metadata = file.metadata().map_err(Unreadable::Io)?;
    match irregular(metadata.file_type()) {
        None => Ok((file, metadata.len())),
        Some(what) => Err(Unreadable::NotRegular(what)),
    }
}

/// What kind of file this is, unless a regular one: reading a directory fails, a FIFO or a
/// terminal may never end, and `/dev/zero` never does.
fn irregular(kind: FileType) -> Option<&'static str> {
    if kind.is_file() {
        None
    } else if kind.is_dir() {
        Some("a directory")
    } else if kind.is_fifo() {
        Some("a FIFO (named pipe)")
    } else if kind.is_char_device() || kind.is_block_device() {
        Some("a device")
    } else {
        Some("a special file")
    }
}

/// End of input: says so, tells the server (by ending our side of the stream), and waits a
/// little for the lines still on their way, until the server closes its side.
fn leave(stream: &TcpStream, closed: &Receiver<()>, console: &Console) -> Result<(), Failure> {
    console.end();
    console.line("exit");
    let _ = stream.shutdown(Shutdown::Write);
    let _ = closed.recv_timeout(LEAVE_WAIT);
    Ok(())
}

fn server_closed() -> Failure {
    Failure::runtime("server closed".into())
}

/// The socket thread: prints every line from the server, cleaned. The channel it returns
/// never carries anything: it disconnects when the server's stream ends, after the prompt
/// has gone.
fn spawn_printer(stream: TcpStream, console: Arc<Console>) -> Result<Receiver<()>, Failure> {
    let (closed, on_close) = bounded::<()>(0);
    spawn("server", move || {
        let _closed = closed;
        let mut reader = LineReader::new(stream, MAX_SERVER_LINE).complete_lines_only();
        loop {
            match reader.read_line() {
                Ok(Some(line)) => console.server_line(&clean(&line)),
                Ok(None) | Err(LineError::Io(_)) => return console.end(),
                Err(e @ LineError::TooLong { .. }) => {
                    console.end();
                    crate::warn!("the server sent a {e}; hanging up");
                    return;
                }
            }
        }
    })?;
    Ok(on_close)
}

/// The stdin thread: each line typed, without its line ending. Disconnects at end of input.
fn spawn_input() -> Result<Receiver<String>, Failure> {
    let (lines, typed) = bounded(16);
    spawn("input", move || {
        for line in io::stdin().lock().split(b'\n') {
            let Ok(line) = line else { return };
            let line = String::from_utf8_lossy(&line);
            if lines.send(line.trim_end_matches('\r').to_string()).is_err() {
                return;
            }
        }
    })?;
    Ok(typed)
}

#[cfg(test)]
mod tests {
    use super::unquote;

    #[test]
    fn one_pair_of_matching_quotes_around_the_path_is_removed() {
        assert_eq!(unquote("'google.png'"), "google.png");
        assert_eq!(unquote("\"my file.png\""), "my file.png");
        assert_eq!(unquote("plain.png"), "plain.png");
        assert_eq!(unquote("'mixed.png\""), "'mixed.png\"");
        assert_eq!(unquote("'it''s.png'"), "it''s.png");
        assert_eq!(unquote("don't.png"), "don't.png");
        assert_eq!(unquote("'"), "'");
        assert_eq!(unquote("''"), "");
    }
}
