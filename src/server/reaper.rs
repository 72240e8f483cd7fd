//! The reaper thread: a client whose keep-alives stopped has disappeared.

use super::connection::print_departure;
use super::registry::Departed;
use super::Shared;
use crate::wire::LeaveReason;
use crate::worker::Stop;
use std::time::{Duration, Instant};

/// How often the reaper looks for silent clients.
const REAP_EVERY: Duration = Duration::from_millis(250);
/// A reaper this much later than it meant to be was not running: see [`reap_silent`].
const STALL: Duration = Duration::from_secs(1);

/// The reaper thread: four times a second, every client silent for `timeout` has disappeared.
/// It is told why in a last line, and its connection closed; its connection thread then
/// finds it already removed.
///
/// A client is silent only if the server was listening: when the reaper wakes much later
/// than it meant to (the server was stopped with SIGSTOP, its VM paused, its machine
/// starved), the keep-alives sent meanwhile are still waiting in the UDP socket, unread.
/// So that time is not held against anyone: everyone's silence is counted from after it.
pub(super) fn reap_silent(registry: &Shared, timeout: Duration, stop: &Stop) {
    let mut last = Instant::now();
    while stop.pause(REAP_EVERY) {
        let now = Instant::now();
        let away = now.saturating_duration_since(last + REAP_EVERY);
        last = now;
        if away > STALL {
            registry.lock().excuse(away);
            continue;
        }
        let mut members = registry.lock();
        for (id, conn) in members.silent(timeout) {
            let Some(outbox) = members.get(&id).map(|m| m.outbox.clone()) else {
                continue;
            };
            let Some(departed) = members.remove(&id, conn, LeaveReason::Disappeared) else {
                continue;
            };
            let why = match departed {
                Departed::Unannounced => {
                    "neither a UDP announcement from you nor UDP_BLOCKED reached the server \
                     within the registration time"
                        .to_string()
                }
                Departed::Listed(_) => format!(
                    "no UDP keep-alive from you reached the server for {} s",
                    timeout.as_secs_f64()
                ),
            };
            print_departure(&id, LeaveReason::Disappeared, departed, None);
            outbox.push_line(&format!("ERROR {why}; closing the connection"));
            outbox.close_after_queued();
        }
    }
}
