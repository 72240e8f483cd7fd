//! One client's TCP connection, on its own thread: where a `REGISTER` is handled, and every
//! request after it: `PUNCH` (the punch is coordinated here), `RELAY` (the relay is here),
//! `UDP_BLOCKED` (a client whose UDP never reached us chats through the relay), `NAT_TEST` and
//! `NAT` (NAT discovery, and what it found), `EXIT`.
//!
//! The connection thread reads lines and changes the registry under its lock; it never
//! writes to a socket. What it has to say, to its own client or to others, is queued on their
//! outboxes, whose writer threads do the sending.

use super::registry::Departed;
use super::Shared;
use crate::lines::{is_timeout, DeadlineStream, LineError, LineReader};
use crate::outbox::Outbox;
use crate::wire::{Event, LeaveReason, Public, Request, MAX_LINE};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// One client's connection: registration first, then its requests until it leaves.
pub(super) fn serve_client(
    stream: &TcpStream,
    outbox: Outbox,
    addr: SocketAddr,
    registry: &Shared,
    register_timeout: Duration,
) {
    // The registration time counts from accept, whatever trickles in: see DeadlineStream.
    let deadline = Instant::now() + register_timeout;
    // A request cut short by the end of the stream is not acted on.
    let mut reader = LineReader::new(DeadlineStream::new(stream), MAX_LINE).complete_lines_only();
    let Some((id, conn)) = register(&mut reader, &outbox, registry, deadline) else {
        return;
    };
    if reader.get_mut().set_deadline(None).is_err() {
        return;
    }
    let reason = loop {
        let line = match reader.read_line() {
            Ok(Some(line)) => line,
            Ok(None) | Err(LineError::Io(_)) => break LeaveReason::Disconnected,
            Err(e @ LineError::TooLong { .. }) => {
                outbox.push_line(&format!("ERROR {e}; closing the connection"));
                break LeaveReason::Disconnected;
            }
        };
        match line.parse::<Request>() {
            Ok(request) => {
                if !handle_request(request, &id, conn, &outbox, registry) {
                    break LeaveReason::Deregistered;
                }
            }
            Err(e) => {
                outbox.push_line(&format!("ERROR {e}"));
            }
        }
    };
    let mut members = registry.lock();
    if let Some(departed) = members.remove(&id, conn, reason) {
        print_departure(&id, reason, departed, Some(addr));
    }
}

/// The server's line for a client that left; `tcp` is where its connection came from, when
/// known.
pub(super) fn print_departure(
    id: &str,
    reason: LeaveReason,
    departed: Departed,
    tcp: Option<SocketAddr>,
) {
    let how = reason.as_str();
    match (departed, tcp) {
        (Departed::Listed(Public::At(public)), _) => crate::event!("{id} is {how} {public}"),
        (Departed::Listed(Public::Asleep), _) => crate::event!("{id} is {how} (Asleep)"),
        (Departed::Listed(Public::Relayed), _) => crate::event!("{id} is {how} (relayed)"),
        (Departed::Unannounced, Some(addr)) if reason != LeaveReason::Disappeared => {
            crate::event!("{id} left before announcing its UDP endpoint ({addr})")
        }
        (Departed::Unannounced, _) => {
            crate::event!("{id} never announced its UDP endpoint; closed")
        }
    }
}

/// Reads lines until a valid `REGISTER` claims a free ID, answering `WELCOME <nonce>`.
/// Anything else gets an `ERROR`; a refused ID, a silent connection or `deadline` closes the
/// connection.
///
/// The deadline is absolute: every read of the socket, not every line, is bounded by the time
/// left, so a connection trickling a byte every few seconds, never a newline, is closed at
/// the deadline like a silent one. Before, the timeout restarted with each byte, and such
/// connections kept their slots (`--max-clients`) for hours.
///
/// Never inlined, nor is [`handle_request`]: folded into [`serve_client`], their locals made
/// one frame big enough that every connection thread touched a third page of stack, 40 MB
/// more for ten thousand clients (measured: 12 KiB of stack per thread, 8 KiB without).
#[inline(never)]
fn register(
    reader: &mut LineReader<DeadlineStream>,
    outbox: &Outbox,
    registry: &Shared,
    deadline: Instant,
) -> Option<(String, u64)> {
    if reader.get_mut().set_deadline(Some(deadline)).is_err() {
        return None;
    }
    loop {
        let line = match reader.read_line() {
            Ok(Some(line)) => line,
            Ok(None) => return None,
            Err(LineError::Io(e)) if is_timeout(&e) => {
                outbox.push_line("ERROR no REGISTER within the registration time; closing");
                return None;
            }
            Err(LineError::Io(_)) => return None,
            Err(e @ LineError::TooLong { .. }) => {
                outbox.push_line(&format!("ERROR {e}; closing the connection"));
                return None;
            }
        };
        match line.parse::<Request>() {
            Ok(Request::Register {
                id,
                private,
                asleep,
            }) => {
                let mut members = registry.lock();
                return match members.register(&id, private, outbox.clone(), asleep, deadline) {
                    Ok(conn) => {
                        if asleep {
                            crate::event!("{id} Asleep");
                        }
                        Some((id, conn))
                    }
                    Err(why) => {
                        let message = why.to_string();
                        outbox.push_line(&Event::Error { message }.to_string());
                        None
                    }
                };
            }
            Ok(_) => {
                outbox.push_line("ERROR register first: REGISTER <id> <private-ip:port>");
            }
            Err(e) => {
                outbox.push_line(&format!("ERROR {e}"));
            }
        }
    }
}

/// A request from registered client `id` on connection `conn`; false when it asks to leave.
/// It can only ever act as itself: the ID comes from its own registration, never from the
/// request. Not inlined: see [`register`].
#[inline(never)]
fn handle_request(
    request: Request,
    id: &str,
    conn: u64,
    outbox: &Outbox,
    registry: &Shared,
) -> bool {
    let refuse = |message: String| {
        outbox.push_line(&Event::Error { message }.to_string());
    };
    match request {
        Request::Punch { peer } => {
            let mut members = registry.lock();
            if peer == id || !members.is_listed(&peer) || !members.is_listed_as(id, conn) {
                refuse(format!("cannot punch to '{peer}': not online"));
            } else if members.is_asleep(&peer) {
                refuse(format!("cannot punch to '{peer}': it is Asleep"));
            } else if members.is_relayed(&peer) || members.is_relayed(id) {
                // No probe of either side's could get through: the relay carries their chats.
                let whose = if members.is_relayed(id) {
                    "your"
                } else {
                    "its"
                };
                refuse(format!(
                    "cannot punch to '{peer}': {whose} UDP is blocked; the relay carries your chats"
                ));
            } else if members.may_punch(id) {
                // Both at once: each side's probes open its own NAT for the other's, and each
                // is handed the key that tags them.
                if let Some(key) = members.pair_key(id, &peer) {
                    let requester = id.to_string();
                    members.offer(
                        &peer,
                        id,
                        &Event::Punch {
                            peer: requester,
                            key,
                        },
                    );
                    members.offer(
                        id,
                        &peer,
                        &Event::Punch {
                            peer: peer.clone(),
                            key,
                        },
                    );
                }
            }
        }
        Request::Relay { to, datagram } => {
            let mut members = registry.lock();
            if datagram.from() != id {
                refuse(format!("relay: a datagram you send must be from '{id}'"));
            } else if !members.is_listed_as(id, conn) {
                refuse(format!("relay: '{id}' is not online"));
            } else if members.is_asleep(&to) {
                refuse(format!(
                    "relay: '{to}' is Asleep and receives no chats until it wakes"
                ));
            } else {
                // Best effort: a dropped relay is retransmitted by its sender.
                members.offer(&to, id, &Event::Relayed { datagram });
            }
        }
        Request::UdpBlocked => {
            // Only for this connection's own registration, and only before it is listed:
            // again, or after its HELLO got through first, it changes nothing.
            if registry.lock().udp_blocked(id, conn) {
                crate::event!("{id} relayed (UDP blocked)");
            }
        }
        Request::NatTest { nonce } => {
            let alt = {
                let mut members = registry.lock();
                members
                    .nat_test(id, conn, nonce)
                    .map(|()| members.nat_port())
            };
            match alt {
                Ok(alt) => outbox.push_line(&Event::NatTest { alt }.to_string()),
                Err(why) => refuse(why.to_string()),
            }
        }
        Request::Nat { kind } => match registry.lock().set_nat(id, conn, kind) {
            Ok(true) => crate::event!("{id} NAT {}", kind.as_str()),
            Ok(false) => {}
            Err(why) => refuse(why.to_string()),
        },
        Request::Register { .. } => refuse(format!("already registered as '{id}'")),
        Request::Exit => return false,
    }
    true
}
