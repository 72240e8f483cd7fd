//! The one way a subcommand fails: a line for the user and an exit code.
//!
//! Every failure a user can cause or meet ends up here, is printed as one line on stderr
//! (`natchat: <what went wrong and what to do>`), and exits with a code scripts can test:
//! 2 for a mistake on the command line, 1 for everything that went wrong while running.

use std::fmt;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::thread;
use std::time::Duration;

#[derive(Debug)]
pub struct Failure {
    pub message: String,
    pub code: i32,
}

impl Failure {
    /// A bad command line or input value: exit code 2.
    pub fn usage(message: String) -> Failure {
        Failure { message, code: 2 }
    }

    /// Something went wrong while running: exit code 1.
    pub fn runtime(message: String) -> Failure {
        Failure { message, code: 1 }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Starts a named thread; failing to is a runtime failure, said in one line.
pub fn spawn(name: &str, body: impl FnOnce() + Send + 'static) -> Result<(), Failure> {
    thread::Builder::new()
        .name(name.into())
        .spawn(body)
        .map(drop)
        .map_err(|e| Failure::runtime(format!("cannot start the {name} thread: {e}")))
}

/// Connects to `natchat <command>` (whose user-facing name is `what`) at `host:port`, giving
/// up after ten seconds, so that a wrong address is one clear line rather than a long hang.
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
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).map_err(|e| {
        Failure::runtime(format!(
            "cannot reach the {what} at {addr}: {e}. Is 'natchat {command}' running there?"
        ))
    })?;
    Ok((stream, addr))
}

/// A server could not start on `addr`; the usual reason, a port in use, gets a hint.
pub fn cannot_listen(addr: &str, e: &std::io::Error, choose: &str) -> Failure {
    let hint = match e.kind() {
        std::io::ErrorKind::AddrInUse => {
            format!(" Is another server running there? Choose another {choose}.")
        }
        _ => String::new(),
    };
    Failure::runtime(format!("cannot listen on {addr}: {e}.{hint}"))
}
