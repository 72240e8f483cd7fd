//! The link to the server: requests over TCP, announcements over UDP, losing the connection,
//! getting it back, and leaving.
//!
//! The client needs the server for little once it chats: a punch, the relay, news of who
//! joins and leaves. So losing the connection ends nothing: [`Client::lost`] says so, keeps
//! every peer and path (direct chats go on), and starts a thread that registers again
//! ([`spawn_reconnect`](super::session::spawn_reconnect)); [`Client::back`] takes the new
//! connection, and the server's new list, when it comes. Meanwhile a request is not sent at
//! all: a relayed chat stays in flight, a punch waits for its next try.

use super::readers::FromServer;
use super::reports::{report_unconfirmed, Gone};
use super::session::{self, Back};
use super::Client;
use crate::failure::{in_words, Failure};
use crate::wire::{Announce, Public, Request};
use crossbeam_channel::Receiver;
use std::io::Write;
use std::time::{Duration, Instant};

impl Client {
    /// Sends one request line, with one system call (`writeln!` on a socket would make
    /// several). While the server is away, nothing is sent: a relayed chat stays in flight
    /// (sent again, or reported not confirmed), a punch waits for the next try.
    pub fn request(&mut self, request: &Request) -> Result<(), Failure> {
        let Some(tcp) = self.tcp.as_mut() else {
            return Ok(());
        };
        if tcp.write_all(format!("{request}\n").as_bytes()).is_err() {
            self.lost()?;
        }
        Ok(())
    }

    /// Tells the server something over UDP (`HELLO`, `ALIVE`, `AWAKE`), from the socket we
    /// chat on: the address it sees the announcement come from is the one peers must reach.
    pub fn announce(&self, announce: Announce) {
        self.send_udp(&announce.to_string(), self.server);
    }

    /// The connection to the server ended: says so in one line, with the server's reason if
    /// it gave one, keeps every peer and path (direct chats go on), and starts registering
    /// again in the background.
    pub fn lost(&mut self) -> Result<(), Failure> {
        let Some(tcp) = self.tcp.take() else {
            return Ok(());
        };
        // Closed for good, both ways, so that the server drops our old registration as soon
        // as it can read, and our new one is not refused as a duplicate of it.
        let _ = tcp.shutdown(std::net::Shutdown::Both);
        let server = self.server;
        match self.last_error.take() {
            Some(why) => crate::say!(
                "The server at {server} closed our connection ({why}); registering again."
            ),
            None => crate::say!(
                "Lost the connection to the server at {server}; registering again when it \
                 answers. Meanwhile peers on direct paths still get our chats."
            ),
        }
        let udp = self.udp.try_clone().map_err(|e| {
            Failure::runtime(format!("cannot share the UDP socket: {}", in_words(&e)))
        })?;
        let asleep = self.peers.me.public == Public::Asleep;
        let next = self.generation + 1;
        session::spawn_reconnect(
            server,
            self.id.clone(),
            asleep,
            udp,
            self.to_loop.clone(),
            next,
        )
    }

    /// Registered again (the server restarted, or had dropped us): the peers it lists are
    /// kept, with their paths and what they sent, the others are dropped until they come
    /// back, and a new public endpoint moves what must move. The server is told our NAT's
    /// kind again (see [`super::discovery`]).
    pub fn back(&mut self, back: Back) -> Result<(), Failure> {
        self.tcp = Some(back.tcp);
        self.generation += 1;
        self.peers.set_mine(back.public);
        if back.public == Public::Asleep {
            self.challenge = Some(back.welcome);
        }
        let listed: Vec<&str> = back.list.iter().map(|info| info.id.as_str()).collect();
        self.peers.retain(|id| listed.contains(&id));
        for info in back.list {
            if info.id == self.id {
                continue;
            }
            match self.peers.get_mut(&info.id) {
                Some(peer) if peer.info.public != info.public => peer.relocate(info.public),
                Some(_) => {}
                None => self.peers.insert(info),
            }
        }
        let status = match self.peers.me.public {
            Public::At(public) => format!("public endpoint {public}"),
            Public::Relayed => {
                "relayed: our UDP seems blocked, so our chats go through the server".to_string()
            }
            Public::Asleep => "still Asleep".to_string(),
        };
        crate::say!(
            "Registered again with the server at {} as {} ({status}).",
            self.server,
            self.id
        );
        // This registration knows nothing of our NAT: it is told what we found, or, if our
        // discovery was cut short, asked afresh.
        self.discovery = None;
        self.tell_nat()?;
        self.discover(Instant::now())
    }

    /// Unregisters and waits (briefly) for the server to close the connection, so that the
    /// `EXIT` is surely read before this process goes.
    pub fn exit(mut self, from_server: &Receiver<FromServer>) -> Result<(), Failure> {
        if self.tcp.is_some() && self.request(&Request::Exit).is_ok() {
            let deadline = Instant::now() + Duration::from_secs(2);
            while let Ok(FromServer::Event(_)) = from_server.recv_deadline(deadline) {}
        }
        for peer in self
            .peers
            .iter()
            .map(|p| p.info.id.clone())
            .collect::<Vec<_>>()
        {
            report_unconfirmed(self.outgoing.forget(&peer), &Gone::Leaving);
        }
        crate::say!("Successfully Terminated");
        Ok(())
    }
}
