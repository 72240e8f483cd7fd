//! natchat: a teaching chat system in two parts.
//!
//! - **P2P chat through a registration server** ([`server`], [`client`]): clients register
//!   over TCP, keep alive over UDP, and chat peer to peer over UDP, across NATs.
//! - **A chat room** ([`room`]): a server that relays every line to everyone.
//!
//! Blocking `std::net` I/O and a thread per connection throughout; threads talk over
//! crossbeam channels; shared state sits behind a `parking_lot::Mutex`.

#![warn(missing_docs)]
// The documentation is written for students reading the whole crate, private items included
// (`make doc`), so it links to them freely.
#![allow(rustdoc::private_intra_doc_links)]

pub mod cli;
pub mod client;
pub mod failure;
pub mod lines;
mod listener;
mod mac;
pub mod nonce;
mod outbox;
pub mod output;
pub mod room;
pub mod scale;
pub mod server;
pub mod wire;
mod worker;
