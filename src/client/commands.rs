//! What the user types: `@chat <id> <message>`, `@show_list`, `@nat`, `@awake` and `@exit`.
//!
//! Each line is one command. A command the client does not know gets a hint: the command
//! it most likely meant ([`meant`]), or the list of commands. A chat that cannot go (to
//! nobody online, to ourselves, to an Asleep peer, too long) is refused here, with the
//! reason, before anything is queued; one that can is queued ([`super::outgoing`]) and
//! sent ([`Client::transmit`]), or, while we are Asleep ourselves, held until we are awake
//! ([`super::awake`]).

use super::Client;
use crate::failure::Failure;
use crate::lines::clean;
use crate::wire::{Nat, Public, MAX_TEXT};
use std::time::Instant;

/// The commands, for the line shown after a mistyped one.
pub const COMMANDS: &str = "@show_list, @chat <id> <message>, @nat, @awake, @exit";

impl Client {
    /// One line typed by the user. Returns false for `@exit`.
    pub fn command(&mut self, line: &str) -> Result<bool, Failure> {
        let (command, rest) = line.split_once(' ').unwrap_or((line, ""));
        let alone = rest.trim().is_empty();
        match command {
            "" => {}
            "@chat" => self.chat(rest.trim_start())?,
            "@show_list" | "@nat" | "@awake" | "@exit" if !alone => {
                crate::say!("Usage: {command}, with nothing after it; nothing was done.")
            }
            "@show_list" => self.show_list(),
            "@nat" => self.say_nat(),
            "@awake" => self.wake(Instant::now()),
            "@exit" => return Ok(false),
            other => match meant(other) {
                // Words after it only for the one command that takes any.
                Some(command) if command == "@chat" && !alone => crate::say!(
                    "Unknown command '{}'. Did you mean '@chat {}'?",
                    clean(other),
                    clean(rest.trim())
                ),
                Some(command) => crate::say!(
                    "Unknown command '{}'. Did you mean '{command}'?",
                    clean(other)
                ),
                None => crate::say!("Unknown command '{}'. Commands: {COMMANDS}", clean(other)),
            },
        }
        Ok(true)
    }

    /// `@chat <id> <message>`: refused, saying why, or queued and sent.
    fn chat(&mut self, args: &str) -> Result<(), Failure> {
        let (to, text) = args.split_once(' ').unwrap_or((args, ""));
        let asleep = self.peers.get(to).map(|peer| peer.is_asleep());
        if to.is_empty() || text.is_empty() {
            crate::say!("Usage: @chat <id> <message>");
        } else if to == self.id {
            crate::say!("That is you; @show_list shows who else is online.");
        } else if asleep.is_none() {
            crate::say!(
                "No client named '{}' is online; @show_list shows who is.",
                clean(to)
            );
        } else if asleep == Some(true) {
            crate::say!(
                "{to} is Asleep: it has no UDP endpoint yet, so it cannot receive chats. \
                 Message not sent; you will see '{to} is awake' when it can."
            );
        } else if text.len() > MAX_TEXT {
            crate::say!(
                "Message too long: {} bytes, at most {MAX_TEXT}.",
                text.len()
            );
        } else if self.peers.me.public == Public::Asleep {
            // Asleep ourselves: the Awake request goes first, the chat once it is answered.
            let now = Instant::now();
            let waking = self.waking.is_some();
            self.wake(now);
            if !waking {
                crate::say!("Waking up first: the message follows once the server has answered.");
            }
            if let Some(waking) = &mut self.waking {
                waking.chats.push((to.to_string(), text.to_string()));
            }
        } else {
            let sends = self.outgoing.queue(to, text.to_string(), Instant::now());
            self.transmit(sends)?;
        }
        Ok(())
    }

    /// Everyone online, each with its status: `<id> <public> Awake  private=<private>  path=`
    /// for an awake peer (`relayed` for its public endpoint if its UDP is blocked), then
    /// `  nat=<kind>` once its NAT discovery found its kind; `<id> Asleep` for one with no
    /// endpoint yet.
    pub fn show_list(&self) {
        let me = &self.peers.me;
        crate::say!("Online ({}):", self.peers.len() + 1);
        match me.public {
            Public::Asleep => crate::say!("{} Asleep  (you)", me.id),
            public => crate::say!("{} {public} Awake  private={}  (you)", me.id, me.private),
        }
        for peer in self.peers.iter() {
            let info = &peer.info;
            match info.public {
                Public::Asleep => crate::say!("{} Asleep", info.id),
                public => crate::say!(
                    "{} {public} Awake  private={}  path={}{}",
                    info.id,
                    info.private,
                    peer.paths.label(),
                    match peer.nat {
                        Nat::Unknown => String::new(),
                        nat => format!("  nat={}", nat.as_str()),
                    }
                ),
            }
        }
    }
}

/// The command a mistyped one most likely meant: `chat`, `@Chat`, `@show-list` and
/// `@showlist` are `@chat`, `@chat`, `@show_list`, `@show_list`.
fn meant(typed: &str) -> Option<&'static str> {
    let squashed: String = typed
        .trim_start_matches('@')
        .chars()
        .filter(|c| !matches!(c, '_' | '-'))
        .flat_map(char::to_lowercase)
        .collect();
    ["@show_list", "@chat", "@nat", "@awake", "@exit"]
        .into_iter()
        .find(|command| command[1..].replace('_', "") == squashed)
}
