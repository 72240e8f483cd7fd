//! What it took to serve ten thousand clients: the machinery, set apart from the lessons.
//!
//! The servers' lesson is short: accept, a thread per client, a registry behind a lock, and
//! an outbox per client whose writer thread does the sending. That design, written plainly,
//! served a class of thirty at once and reached 10,000 room users only after half an hour
//! (docs/BENCHMARKS.md, "What made 10,000 possible"). Each technique below closed part of
//! that gap, was measured before and after, and stays only because it paid. Each says here
//! what it costs a reader, and what it buys.
//!
//! - **Rounds** ([`rounds`]): joins and leaves are gathered for 1 to 100 ms and sent to
//!   everyone as one shared message. Costs: a second kind of message in every queue, and the
//!   rule that a round must end before anything from or about a newcomer goes out.
//!   Buys: filling a server makes N²/2 join lines (fifty million for 10,000); sent one by
//!   one they took minutes of CPU and hundreds of megabytes of queues; in rounds, 3,000
//!   registrations went from 62 s to under 10, and 10,000 room users from 30 min to 20 s.
//! - **Limits** ([`limits`]): the connection cap is worked out from the kernel's limits at
//!   start-up. Costs: two files read, one line said when the machine sets the cap.
//!   Buys: past those limits a new thread cannot start and Rust aborts the whole process;
//!   with the cap the server refuses newcomers with a line instead.
//! - **Small stacks**: a connection thread gets 128 KiB of stack, not the default 2 MiB
//!   ([`CONNECTION_STACK`](limits::CONNECTION_STACK)), and the registration server keeps
//!   `register` and `handle_request` out of line (`#[inline(never)]`), so a connection
//!   thread touches two pages of stack, not three. Costs: an attribute whose reason is not
//!   visible in the code. Buys: 40 MB less at 10,000 clients.
//! - **Parked writers** (in [`crate::outbox`]): an idle writer thread sleeps with
//!   `thread::park` and a push wakes it with `unpark`, after one yield. Costs: a hand-made
//!   wake-up instead of a channel's blocking `recv`. Buys: crossbeam's `recv` spins and
//!   yields before it sleeps; ten thousand writers woken for every join spent 77 % of the
//!   CPU doing that.
//!
//! And one choice that is not about scale, though it looks like it: the two servers keep
//! their members differently. The P2P registry is a map behind a `Mutex`, changed by every
//! request (a registration, a keep-alive's timestamp, a punch), read by few: a lock is the
//! plain answer. The room's member list is read by every message (each line goes to
//! everyone) and changed only by joins and leaves: it is a copy-on-write
//! `Mutex<Arc<Vec<Member>>>`, so a broadcast holds the lock only to clone one `Arc`, and a
//! thousand users sending at once do not queue behind each other's loops over the list.

pub mod limits;
pub(crate) mod rounds;
