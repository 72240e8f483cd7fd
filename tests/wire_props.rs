//! Property tests: every encoder and parser agree, and no input makes a parser panic.

use natchat::lines::{clean, is_format, LineReader};
use natchat::nonce::{Key, Nonce};
use natchat::wire::{
    Announce, Datagram, Event, LeaveReason, Nat, NatOpen, Numbered, PeerInfo, Public, Request,
    MAX_TEXT,
};
use proptest::prelude::*;
use std::net::SocketAddr;

fn id() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_.-]{1,32}"
}

fn addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
        (any::<[u16; 8]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
    ]
}

/// Chat text: anything a line can hold (no line breaks), within the size limit.
fn text() -> impl Strategy<Value = String> {
    "[^\r\n]{0,200}".prop_filter("fits in a datagram", |t| t.len() <= MAX_TEXT)
}

fn nonce() -> impl Strategy<Value = Nonce> {
    "[0-9a-f]{32}".prop_map(|s| s.parse().unwrap())
}

fn numbered() -> impl Strategy<Value = Numbered> {
    (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(session, seq, base)| Numbered {
        session,
        seq,
        base,
    })
}

fn key() -> impl Strategy<Value = Key> {
    "[0-9a-f]{32}".prop_map(|s| s.parse().unwrap())
}

fn datagram() -> impl Strategy<Value = Datagram> {
    prop_oneof![
        (id(), numbered(), nonce(), any::<u64>(), text()).prop_map(
            |(from, number, stamp, tag, text)| Datagram::Chat {
                from,
                number,
                stamp,
                tag,
                text
            }
        ),
        (id(), any::<u64>(), nonce()).prop_map(|(from, seq, stamp)| Datagram::Ack {
            from,
            seq,
            stamp
        }),
        (id(), nonce(), any::<u64>()).prop_map(|(from, nonce, tag)| Datagram::Probe {
            from,
            nonce,
            tag
        }),
        (id(), nonce(), addr(), any::<u64>()).prop_map(|(from, nonce, seen, tag)| {
            Datagram::ProbeAck {
                from,
                nonce,
                seen,
                tag,
            }
        }),
    ]
}

fn public() -> impl Strategy<Value = Public> {
    prop_oneof![
        addr().prop_map(Public::At),
        Just(Public::Asleep),
        Just(Public::Relayed),
    ]
}

fn peer() -> impl Strategy<Value = PeerInfo> {
    (id(), public(), addr()).prop_map(|(id, public, private)| PeerInfo {
        id,
        public,
        private,
    })
}

fn nat() -> impl Strategy<Value = Nat> {
    proptest::sample::select(Nat::ALL.to_vec())
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        (id(), addr(), any::<bool>()).prop_map(|(id, private, asleep)| Request::Register {
            id,
            private,
            asleep
        }),
        id().prop_map(|peer| Request::Punch { peer }),
        (id(), datagram()).prop_map(|(to, datagram)| Request::Relay { to, datagram }),
        Just(Request::UdpBlocked),
        nonce().prop_map(|nonce| Request::NatTest { nonce }),
        nat().prop_map(|kind| Request::Nat { kind }),
        Just(Request::Exit),
    ]
}

fn event() -> impl Strategy<Value = Event> {
    let reason = prop_oneof![
        Just(LeaveReason::Deregistered),
        Just(LeaveReason::Disconnected),
        Just(LeaveReason::Disappeared)
    ];
    prop_oneof![
        nonce().prop_map(|nonce| Event::Welcome { nonce }),
        nonce().prop_map(|nonce| Event::Challenge { nonce }),
        public().prop_map(|public| Event::Ready { public }),
        peer().prop_map(Event::Peer),
        Just(Event::ListEnd),
        peer().prop_map(Event::Joined),
        (id(), addr()).prop_map(|(id, public)| Event::Awake { id, public }),
        (id(), addr()).prop_map(|(id, public)| Event::Moved { id, public }),
        (id(), reason).prop_map(|(id, reason)| Event::Left { id, reason }),
        (id(), key()).prop_map(|(peer, key)| Event::Punch { peer, key }),
        datagram().prop_map(|datagram| Event::Relayed { datagram }),
        text().prop_map(|message| Event::Error { message }),
        proptest::option::of(1u16..).prop_map(|alt| Event::NatTest { alt }),
        (1u16.., addr()).prop_map(|(port, seen)| Event::NatSeen { port, seen }),
        (id(), nat()).prop_map(|(id, kind)| Event::Nat { id, kind }),
    ]
}

fn announce() -> impl Strategy<Value = Announce> {
    prop_oneof![
        (id(), nonce()).prop_map(|(id, nonce)| Announce::Hello { id, nonce }),
        id().prop_map(|id| Announce::Alive { id }),
        (id(), proptest::option::of(nonce())).prop_map(|(id, nonce)| Announce::Awake { id, nonce }),
        (id(), nonce()).prop_map(|(id, nonce)| Announce::NatProbe { id, nonce }),
    ]
}

proptest! {
    #[test]
    fn requests_round_trip(r in request()) {
        prop_assert_eq!(r.to_string().parse::<Request>(), Ok(r));
    }

    #[test]
    fn events_round_trip(e in event()) {
        prop_assert_eq!(e.to_string().parse::<Event>(), Ok(e));
    }

    #[test]
    fn announcements_round_trip(a in announce()) {
        prop_assert_eq!(a.to_string().parse::<Announce>(), Ok(a));
    }

    /// The server's one NAT datagram round-trips, and is never longer than the probe that
    /// asks for it, whatever the ID: no amplification.
    #[test]
    fn nat_open_round_trips_and_is_shorter_than_any_probe(id in id(), nonce in nonce()) {
        let open = NatOpen { nonce };
        prop_assert_eq!(open.to_string().parse::<NatOpen>(), Ok(open));
        let probe = Announce::NatProbe { id, nonce };
        prop_assert!(open.to_string().len() < probe.to_string().len());
    }

    #[test]
    fn datagrams_round_trip(d in datagram()) {
        prop_assert_eq!(d.to_string().parse::<Datagram>(), Ok(d));
    }

    #[test]
    fn a_tag_holds_only_for_what_was_tagged_and_only_under_its_key(
        from in id(), number in numbered(), stamp in nonce(), text in text(), k in key(), other in key()
    ) {
        let chat = Datagram::chat(&from, number, stamp, text.clone(), Some(&k));
        prop_assert!(chat.tagged_by(&k));
        prop_assert!(!chat.tagged_by(&other) || k.to_string() == other.to_string());
        let altered = Datagram::chat(&from, number, stamp, format!("{text}!"), Some(&k));
        if let (Datagram::Chat { tag, .. }, Datagram::Chat { from, number, stamp, text, .. }) = (&chat, altered) {
            let forged = Datagram::Chat { from, number, stamp, tag: *tag, text };
            prop_assert!(!forged.tagged_by(&k), "the tag does not carry over to other text");
        }
        let probe = Datagram::probe(&from, stamp, &k);
        prop_assert!(probe.tagged_by(&k));
        if let Datagram::Probe { from, nonce, tag } = probe {
            let seen = "127.0.0.1:1".parse().unwrap();
            let reused = Datagram::ProbeAck { from, nonce, seen, tag };
            prop_assert!(!reused.tagged_by(&k), "a probe's tag is no answer's");
        }
    }

    #[test]
    fn no_text_makes_a_parser_panic(s in "\\PC*|[A-Z_]{2,9} .*") {
        let _ = s.parse::<Request>();
        let _ = s.parse::<Event>();
        let _ = s.parse::<Announce>();
        let _ = s.parse::<Datagram>();
        let _ = s.parse::<NatOpen>();
    }

    #[test]
    fn lines_never_exceed_the_cap_and_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096), max in 1usize..300) {
        let mut reader = LineReader::new(&bytes[..], max);
        for _ in 0..bytes.len() + 1 {
            match reader.read_line() {
                Ok(Some(line)) => prop_assert!(line.len() <= max * 3, "lossy UTF-8 may grow a line, bytes in it are capped"),
                Ok(None) | Err(_) => break,
            }
        }
    }

    #[test]
    fn cleaned_text_holds_no_control_characters(s in ".*") {
        prop_assert!(!clean(&s).chars().any(|c| c.is_control() && c != '\t'));
        prop_assert!(!clean(&s).chars().any(is_format));
    }

    /// Format characters (bidi controls, zero-width characters) mixed densely into any text:
    /// none is left, each character is replaced one for one, and the rest is kept as it was.
    #[test]
    fn cleaned_text_holds_no_format_characters(
        s in "([\u{AD}\u{600}-\u{605}\u{61C}\u{200B}-\u{200F}\u{202A}-\u{202E}\u{2060}-\u{2064}\u{2066}-\u{206F}\u{FEFF}\u{FFF9}-\u{FFFB}\u{E0001}\u{E0020}-\u{E007F}]|.){0,64}"
    ) {
        let cleaned = clean(&s);
        prop_assert!(!cleaned.chars().any(|c| is_format(c) || (c.is_control() && c != '\t')));
        let hidden = ['\u{202E}', '\u{200B}', '\u{200D}', '\u{2066}', '\u{FEFF}'];
        prop_assert!(!cleaned.contains(hidden), "{:?}", cleaned);
        prop_assert_eq!(cleaned.chars().count(), s.chars().count());
        for (was, is) in s.chars().zip(cleaned.chars()) {
            let replacement = char::REPLACEMENT_CHARACTER;
            prop_assert!(is == was || is == replacement, "{:?} became {:?}", was, is);
        }
    }
}
