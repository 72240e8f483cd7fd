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
//! Text lines over TCP, at most [`MAX_LINE`] bytes, so that `nc HOST PORT` is a complete
//! client: a line is a message for everyone, `#upload <bytes> <name>` and the bytes is a file
//! ([`upload`]), and the server answers with one line per event (someone came in, said
//! something, uploaded, left). Every line, each way, is listed in one place:
//! docs/PROTOCOL.md, "The chat room". Control and format characters in what users send are
//! replaced (see [`clean`](crate::lines::clean)) before anyone else sees it.
//!
//! `natchat room-client` prints the server's lines as they come, except on a terminal: there the user
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
