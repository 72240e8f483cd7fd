//! The one way a subcommand fails: a line for the user and an exit code.
//!
//! Every failure a user can cause or meet ends up here, is printed as one line on stderr
//! (`natchat: <what went wrong and what to do>`), and exits with a code scripts can test:
//! 2 for a mistake on the command line, 1 for everything that went wrong while running.

use std::fmt;
use std::thread;

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
