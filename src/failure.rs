//! The one way a subcommand fails: a line for the user and an exit code.
//!
//! Every failure a user can cause or meet ends up here, is printed as one line on stderr
//! (`natchat: <what went wrong and what to do>`), and exits with a code scripts can test:
//! 2 for a mistake on the command line, 1 for everything that went wrong while running.

use std::fmt;
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::thread;
use std::time::Duration;

/// Why a subcommand ended unsuccessfully, as one line for the user. The kind decides the
/// exit code; the line says what went wrong and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// A mistake on the command line or in a value the user typed: exit code 2.
    Usage(String),
    /// Something went wrong while running (a server not there, a port in use): exit code 1.
    Runtime(String),
}

impl Failure {
    /// A bad command line or input value.
    pub fn usage(message: String) -> Failure {
        Failure::Usage(message)
    }

    /// Something went wrong while running.
    pub fn runtime(message: String) -> Failure {
        Failure::Runtime(message)
    }

    /// The process's exit code: 2 for a usage mistake, as most Unix tools do; 1 otherwise.
    pub fn code(&self) -> u8 {
        match self {
            Failure::Usage(_) => 2,
            Failure::Runtime(_) => 1,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Usage(line) | Failure::Runtime(line) => f.write_str(line),
        }
    }
}

impl std::error::Error for Failure {}

/// An OS error in words, for a user: `no such file or directory`, without the
/// `(os error 2)` that `io::Error` adds, which means nothing to anyone reading the line.
pub fn in_words(e: &std::io::Error) -> String {
    let text = e.to_string();
    let text = match text.rfind(" (os error ") {
        Some(at) if text.ends_with(')') => &text[..at],
        _ => &text,
    };
    // "No such file" reads as a sentence of its own; mid-line it is "no such file". An
    // acronym ("TLS ...") keeps its capitals.
    let mut chars = text.chars();
    match (chars.next(), chars.next()) {
        (Some(first), Some(second)) if first.is_uppercase() && second.is_lowercase() => first
            .to_lowercase()
            .chain(text[first.len_utf8()..].chars())
            .collect(),
        _ => text.to_string(),
    }
}

/// Starts a named thread; failing to is a runtime failure, said in one line.
pub fn spawn(name: &str, body: impl FnOnce() + Send + 'static) -> Result<(), Failure> {
    thread::Builder::new()
        .name(name.into())
        .spawn(body)
        .map(drop)
        .map_err(|e| Failure::runtime(format!("cannot start the {name} thread: {}", in_words(&e))))
}

/// How long a first connection keeps trying before it is given up, and after how long the
/// user is told that it still is. On a slow, lossy link TCP's own SYN retries (1, 3, 7, 15 s
/// after the first) need tens of seconds; a server that is simply not there answers at once,
/// with a refusal, and that fails at once.
const CONNECT_PATIENCE: Duration = Duration::from_secs(60);
const STILL_TRYING: Duration = Duration::from_secs(8);

/// Connects to `natchat <command>` (whose user-facing name is `what`) at `host:port`. A
/// refusal (nothing listening there) fails at once; no answer at all is waited out for up to
/// [`CONNECT_PATIENCE`], saying after [`STILL_TRYING`] that it is still trying, and then
/// trying afresh: a new connection's first SYN goes at once, where the first try's next
/// retry would wait its doubled pause. Ctrl+C ends the wait, as it ends the process.
pub fn connect(
    host: &str,
    port: u16,
    what: &str,
    command: &str,
) -> Result<(TcpStream, SocketAddr), Failure> {
    let cannot = |why: String| Failure::runtime(format!("cannot resolve {what} '{host}': {why}"));
    let addr = (host, port)
        .to_socket_addrs()
        .map_err(|e| cannot(e.to_string()))?
        .next()
        .ok_or_else(|| cannot("no address".into()))?;
    let stream = match TcpStream::connect_timeout(&addr, STILL_TRYING) {
        Err(e) if e.kind() == ErrorKind::TimedOut => {
            crate::say!("Still trying to reach the {what} at {addr} (slow or lossy link?)...");
            TcpStream::connect_timeout(&addr, CONNECT_PATIENCE - STILL_TRYING)
        }
        first => first,
    };
    let stream = stream.map_err(|e| {
        let why = match e.kind() {
            ErrorKind::TimedOut => format!("no answer in {} s", CONNECT_PATIENCE.as_secs()),
            _ => in_words(&e),
        };
        Failure::runtime(format!(
            "cannot reach the {what} at {addr}: {why}. Is 'natchat {command}' running there?"
        ))
    })?;
    Ok((stream, addr))
}

/// A server could not start on `addr`; the usual reason, a port in use, gets a hint.
pub fn cannot_listen(addr: &str, e: &std::io::Error, choose: &str) -> Failure {
    let hint = match e.kind() {
        ErrorKind::AddrInUse => {
            format!(" Is another server running there? Choose another {choose}.")
        }
        _ => String::new(),
    };
    Failure::runtime(format!("cannot listen on {addr}: {}.{hint}", in_words(e)))
}

#[cfg(test)]
mod tests {
    use super::in_words;
    use std::io;

    #[test]
    fn os_errors_read_as_words() {
        let gone = io::Error::from_raw_os_error(2);
        assert_eq!(in_words(&gone), "no such file or directory");
        let custom = io::Error::other("TLS is not spoken here");
        assert_eq!(in_words(&custom), "TLS is not spoken here");
    }
}
