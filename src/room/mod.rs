//! `natchat room-server` and `natchat room-client`: a chat room where every line goes to
//! everyone.
//!
//! ```text
//!  accept ──spawn──▶ connection thread (one per user): reads lines, receives uploads
//!                     │  join / leave: under the lock, add a line to the round
//!                     │  message: clone the member list, queue a line for everyone
//!  rounds thread ─────┤  every 1-100 ms: end the round, queue it for everyone
//!                     ▼
//!              Room: Mutex<Arc<Vec<Member>>> ──▶ each member's Outbox ──▶ its writer thread
//! ```
//!
//! # The protocol
//!
//! Text lines over TCP, each ended by `\n` or `\r\n`, at most [`MAX_LINE`] bytes: `nc HOST PORT`
//! is a complete client.
//!
//! From a client:
//! - `<text>`: a message for everyone. Empty or whitespace-only lines are ignored. A line over
//!   [`MAX_LINE`] bytes gets `Error: line longer than 8192 bytes; closing the connection.`
//!   A last line that the end of the connection cuts short is dropped: it may be half of one.
//! - `#upload <bytes> <name>`, then exactly `<bytes>` raw bytes: a file (see `upload`).
//!
//! From the server, one line per event (`<n users online>` reads `1 user online` for one,
//! `<n> users online` for any other number, this user included):
//! - to a newcomer, first: `Connected to the chat server (<n users online>)`
//! - to everyone else: `New user <ip>:<port> entered (<n users online>)`
//! - a message, to everyone else: `[<ip>:<port>] <text>`; to its sender: `[You] <text>`
//! - `The user <ip>:<port> left (<n users online>)`, however the user went
//! - an upload, to everyone else: `User <ip>:<port> has uploaded a file <name> (<bytes> bytes)`;
//!   to the uploader: `File <name> has uploaded!`, or one line saying why it was refused.
//!
//! The server prints the same lines everyone else receives. Control and format characters in
//! what users send are replaced (see [`clean`](crate::lines::clean)) before anyone else sees
//! it.
//!
//! `natchat room-client` prints these lines as they come, except on a terminal: there the user
//! types after a `[You] ` prompt, so the echo `[You] <text>` is already on the screen and is
//! not printed again (see `console`). It sends `#upload <path>` only for a regular file, the
//! path unquoted as a shell would (`'my file.png'`).

pub mod client;
mod console;
mod registry;
pub mod server;
pub mod upload;

pub use server::Server;

/// The longest line a user may send, without its line ending.
pub const MAX_LINE: usize = 8192;

/// `1 user online`, or `<n> users online` for any other `n` (0 included).
fn online(n: usize) -> String {
    match n {
        1 => "1 user online".to_string(),
        n => format!("{n} users online"),
    }
}

#[cfg(test)]
mod tests {
    use super::online;

    #[test]
    fn one_user_is_singular_and_every_other_count_plural() {
        assert_eq!(online(0), "0 users online");
        assert_eq!(online(1), "1 user online");
        assert_eq!(online(2), "2 users online");
    }
}
