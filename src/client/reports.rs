//! What the user is told about messages: each one a peer sent, in order ([`show`]), and
//! each one of ours that no acknowledgement confirmed, or that never left
//! ([`report_unconfirmed`], [`Client::report_unsent`]).
//!
//! A report says only what is known. A message sent without an acknowledgement in time may
//! well have arrived (its acknowledgement lost, or its recipient slow): it is *not
//! confirmed*. Only a message that never left is *not sent*.

use super::inbound::Shown;
use super::outgoing::Unconfirmed;
use super::Client;
use crate::lines::clean;

/// Prints what a peer sent, in order: messages, late ones, and gaps that were waited out.
pub fn show(from: &str, shown: Vec<Shown>) {
    for item in shown {
        match item {
            Shown::Text(text) => crate::say!("From {from} [{}]", clean(&text)),
            Shown::Late(text) => crate::say!(
                "From {from} [{}] (late: sent before messages shown already)",
                clean(&text)
            ),
            Shown::Gap(1) => crate::say!("(a message from {from} before the next has not arrived)"),
            Shown::Gap(n) => {
                crate::say!("({n} messages from {from} before the next have not arrived)")
            }
        }
    }
}

/// Why messages end without a confirmation.
pub enum Gone {
    /// No acknowledgement came in time.
    TimedOut,
    /// The peer left.
    PeerLeft,
    /// We are leaving.
    Leaving,
}

/// Reports each message no acknowledgement confirmed, saying only what is known: one that
/// was sent may have arrived; only one that never left surely did not.
pub fn report_unconfirmed(messages: Vec<Unconfirmed>, gone: &Gone) {
    for Unconfirmed {
        to,
        text,
        sent,
        waited,
    } in messages
    {
        let text = clean(&text);
        let waited = waited.as_secs();
        match (gone, sent) {
            (Gone::TimedOut, true) => crate::say!(
                "Message to {to} not confirmed yet (no acknowledgement in {waited} s; it may \
                 still arrive): [{text}]"
            ),
            (Gone::TimedOut, false) => crate::say!(
                "Message to {to} not sent: with the server away, no path to {to} was found in \
                 {waited} s: [{text}]"
            ),
            (Gone::PeerLeft, true) => {
                crate::say!("Message to {to} not confirmed before {to} left: [{text}]")
            }
            (Gone::PeerLeft, false) => {
                crate::say!("Message to {to} not sent: {to} left first: [{text}]")
            }
            (Gone::Leaving, true) => {
                crate::say!("Message to {to} not confirmed before we left: [{text}]")
            }
            (Gone::Leaving, false) => {
                crate::say!("Message to {to} not sent: we left first: [{text}]")
            }
        }
    }
}

impl Client {
    /// Reports each chat held for an Awake request that was not answered, saying `why`.
    pub fn report_unsent(&mut self, why: &str) {
        for (to, text) in self.waking.take().map(|w| w.chats).unwrap_or_default() {
            crate::say!("Message to {to} was not sent ({why}): [{}]", clean(&text));
        }
    }
}
