//! Stateful reconnect (hub protocol version 2): the sequence numbers, the replay buffer and
//! duplicate suppression, as the official clients and ASP.NET Core implement them. Pure: no I/O,
//! no clock.
//!
//! Each side numbers the *trackable* messages it sends (types 1–5: invocations, stream items,
//! completions, stream invocations, cancels) 1, 2, 3… and keeps them until the other side
//! acknowledges them with `Ack { sequence_id }` (everything up to that id arrived). When the
//! transport drops and a new one takes over, each side first sends `Sequence { sequence_id }`
//! (the id of the first message it is about to send again), then every message not yet
//! acknowledged. The receiver, after a reconnect, ignores everything until that `Sequence`,
//! rewinds its counter to the id it names, and drops the messages it had already processed, so
//! every message is processed once, in order, across any number of reconnects.
//!
//! [`SendBuffer`] is the sending half (generic over the stored frame), [`Receiver`] the
//! receiving half.

use std::collections::VecDeque;

use crate::{FrameReader, Protocol};

/// How many trackable messages (types 1–5) a frame holds: a frame may carry several messages
/// (an upstream's answer, a pre-serialized REST payload) or none that counts (a ping). The
/// common frames (one invocation, as Switchboard serializes it) are recognized from their first
/// bytes; others are decoded.
pub fn trackable_messages(protocol: Protocol, frame: &[u8]) -> u64 {
    let mut reader = FrameReader::new(protocol, usize::MAX);
    reader.push(frame);
    let mut count = 0;
    while let Ok(Some(payload)) = reader.next_frame() {
        if message_type(protocol, &payload).is_some_and(|t| (1..=5).contains(&t)) {
            count += 1;
        }
    }
    count
}

fn message_type(protocol: Protocol, payload: &[u8]) -> Option<u8> {
    let quick = match protocol {
        // `{"type":N,` — how every JSON frame Switchboard builds begins.
        Protocol::Json => payload
            .strip_prefix(b"{\"type\":")
            .and_then(|rest| match rest {
                [d, b',' | b'}', ..] if d.is_ascii_digit() => Some(d - b'0'),
                _ => None,
            }),
        // A fixarray whose first element is a positive fixint.
        Protocol::MessagePack => match payload {
            [0x90..=0x9f, t @ 0..=0x7f, ..] => Some(*t),
            _ => None,
        },
    };
    quick.or_else(|| {
        crate::decode(protocol, payload)
            .ok()
            .map(|m| m.message_type())
    })
}

/// The sending half: numbers trackable messages and keeps them until acknowledged.
#[derive(Debug)]
pub struct SendBuffer<T> {
    /// Bytes of unacknowledged messages above which [`SendBuffer::has_room`] says no (the writer
    /// then waits for an ack: back-pressure, as ASP.NET Core applies it).
    limit: usize,
    /// The id the next trackable message gets.
    next_id: u64,
    /// Sent and not acknowledged, oldest first: the first and last id of the messages each
    /// frame holds, its size, the frame.
    unacked: VecDeque<(u64, u64, usize, T)>,
    bytes: usize,
}

impl<T> SendBuffer<T> {
    pub fn new(limit: usize) -> SendBuffer<T> {
        SendBuffer {
            limit,
            next_id: 1,
            unacked: VecDeque::new(),
            bytes: 0,
        }
    }

    /// Whether a message of `len` bytes may be sent now. An empty buffer always has room, so a
    /// message larger than the limit is not stuck forever.
    pub fn has_room(&self, len: usize) -> bool {
        self.unacked.is_empty() || self.bytes + len <= self.limit
    }

    /// Records a trackable message about to be sent; returns its id.
    pub fn push(&mut self, len: usize, message: T) -> u64 {
        self.push_frame(1, len, message).unwrap_or(self.next_id)
    }

    /// Records a frame of `count` trackable messages about to be sent; returns the id of its
    /// last. A frame with none (a ping) is not kept: it is never replayed (`None`).
    pub fn push_frame(&mut self, count: u64, len: usize, frame: T) -> Option<u64> {
        if count == 0 {
            return None;
        }
        let first = self.next_id;
        self.next_id += count;
        let last = self.next_id - 1;
        self.bytes += len;
        self.unacked.push_back((first, last, len, frame));
        Some(last)
    }

    /// The peer acknowledged everything up to `sequence_id`. Returns how many messages were
    /// released. An ack beyond what was sent is a protocol error (`Err`).
    pub fn ack(&mut self, sequence_id: u64) -> Result<usize, SequenceError> {
        if sequence_id >= self.next_id {
            return Err(SequenceError::AckBeyondSent {
                acked: sequence_id,
                sent: self.next_id - 1,
            });
        }
        let mut released = 0;
        while self
            .unacked
            .front()
            .is_some_and(|(_, last, _, _)| *last <= sequence_id)
        {
            if let Some((_, _, len, _)) = self.unacked.pop_front() {
                self.bytes -= len;
                released += 1;
            }
        }
        Ok(released)
    }

    /// What to send on a new transport: the `Sequence` id, then every unacknowledged message.
    pub fn replay(&self) -> (u64, impl Iterator<Item = &T>) {
        let first = self
            .unacked
            .front()
            .map_or(self.next_id, |(first, _, _, _)| *first);
        (first, self.unacked.iter().map(|(_, _, _, m)| m))
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Messages held.
    pub fn len(&self) -> usize {
        self.unacked.len()
    }

    pub fn is_empty(&self) -> bool {
        self.unacked.is_empty()
    }
}

/// The receiving half: which incoming messages to process, and what to acknowledge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receiver {
    /// The id the next trackable message carries.
    next_id: u64,
    /// The highest id processed.
    latest: u64,
    /// After a reconnect, everything is ignored until the peer's `Sequence`.
    waiting_for_sequence: bool,
    /// The highest id acknowledged to the peer.
    acked: u64,
}

impl Default for Receiver {
    fn default() -> Self {
        Receiver::new()
    }
}

/// A peer broke the sequence rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SequenceError {
    #[error("Sequence ID {got} greater than amount of messages we've received ({expected}).")]
    SequenceAhead { got: u64, expected: u64 },
    #[error("Ack for message {acked}, but only {sent} were sent.")]
    AckBeyondSent { acked: u64, sent: u64 },
}

/// What to do with an incoming message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Incoming {
    /// Handle it.
    Process,
    /// A duplicate, or not the `Sequence` awaited after a reconnect: drop it.
    Skip,
}

impl Receiver {
    pub fn new() -> Receiver {
        Receiver {
            next_id: 1,
            latest: 0,
            waiting_for_sequence: false,
            acked: 0,
        }
    }

    /// A message arrived; `trackable` is [`crate::HubMessage::is_trackable`] of it, `sequence`
    /// the id if it is a `Sequence` message.
    pub fn on_message(
        &mut self,
        trackable: bool,
        sequence: Option<u64>,
    ) -> Result<Incoming, SequenceError> {
        if let Some(id) = sequence {
            if id > self.next_id {
                return Err(SequenceError::SequenceAhead {
                    got: id,
                    expected: self.next_id,
                });
            }
            self.waiting_for_sequence = false;
            self.next_id = id;
            return Ok(Incoming::Skip);
        }
        if self.waiting_for_sequence {
            return Ok(Incoming::Skip);
        }
        if !trackable {
            return Ok(Incoming::Process);
        }
        let id = self.next_id;
        self.next_id += 1;
        if id <= self.latest {
            return Ok(Incoming::Skip);
        }
        self.latest = id;
        Ok(Incoming::Process)
    }

    /// The transport was replaced: ignore everything until the peer's `Sequence`.
    pub fn reconnected(&mut self) {
        self.waiting_for_sequence = true;
    }

    /// The id to acknowledge, if there is something new to acknowledge; then it counts as
    /// acknowledged.
    pub fn ack_due(&mut self) -> Option<u64> {
        (self.latest > self.acked).then(|| {
            self.acked = self.latest;
            self.latest
        })
    }

    /// The highest id processed.
    pub fn latest(&self) -> u64 {
        self.latest
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn acks_release_and_replay_resends_the_rest() {
        let mut send = SendBuffer::new(10);
        assert!(send.has_room(100), "an empty buffer always has room");
        assert_eq!(send.push(4, "a"), 1);
        assert_eq!(send.push(4, "b"), 2);
        assert!(!send.has_room(4), "over the limit");
        assert_eq!(send.push(4, "c"), 3);
        assert_eq!(send.ack(1), Ok(1));
        assert_eq!(send.bytes(), 8);
        let (first, rest) = send.replay();
        assert_eq!(
            (first, rest.copied().collect::<Vec<_>>()),
            (2, vec!["b", "c"])
        );
        assert_eq!(send.ack(3), Ok(2));
        assert!(send.is_empty());
        let (first, rest) = send.replay();
        assert_eq!(
            (first, rest.count()),
            (4, 0),
            "nothing to replay: the next id"
        );
        assert_eq!(
            send.ack(4),
            Err(SequenceError::AckBeyondSent { acked: 4, sent: 3 })
        );
        assert_eq!(send.ack(2), Ok(0), "an old ack is harmless");
    }

    #[test]
    fn frames_count_their_trackable_messages() {
        let json = Protocol::Json;
        assert_eq!(
            trackable_messages(json, b"{\"type\":1,\"target\":\"m\",\"arguments\":[]}\x1e"),
            1
        );
        assert_eq!(trackable_messages(json, b"{\"type\":6}\x1e"), 0);
        assert_eq!(
            trackable_messages(
                json,
                b"{\"type\":3,\"invocationId\":\"1\"}\x1e{\"type\":3,\"invocationId\":\"2\"}\x1e"
            ),
            2
        );
        // Not in Switchboard's own order: decoded.
        assert_eq!(
            trackable_messages(json, b"{\"target\":\"m\",\"type\":1,\"arguments\":[]}\x1e"),
            1
        );
        let mp = Protocol::MessagePack;
        let ping = crate::encode(mp, &crate::HubMessage::Ping).expect("encodes");
        assert_eq!(trackable_messages(mp, &ping), 0);
        let completion = crate::encode(
            mp,
            &crate::HubMessage::Completion {
                invocation_id: "1".into(),
                result: crate::CompletionResult::Void,
                headers: Vec::new(),
            },
        )
        .expect("encodes");
        let two = [completion.as_ref(), completion.as_ref()].concat();
        assert_eq!(trackable_messages(mp, &two), 2);
    }

    #[test]
    fn a_frame_of_several_messages_takes_as_many_ids() {
        let mut send = SendBuffer::new(100);
        assert_eq!(send.push_frame(2, 10, "ab"), Some(2));
        assert_eq!(send.push_frame(0, 5, "ping"), None);
        assert_eq!(send.push_frame(1, 10, "c"), Some(3));
        assert_eq!(send.ack(1), Ok(0), "half of a frame keeps it");
        assert_eq!(send.replay().0, 1);
        assert_eq!(send.ack(2), Ok(1));
        assert_eq!(send.replay().0, 3);
    }

    #[test]
    fn the_receiver_waits_for_the_sequence_and_drops_duplicates() {
        let mut recv = Receiver::new();
        assert_eq!(recv.on_message(true, None), Ok(Incoming::Process)); // 1
        assert_eq!(recv.on_message(false, None), Ok(Incoming::Process)); // a ping
        assert_eq!(recv.on_message(true, None), Ok(Incoming::Process)); // 2
        assert_eq!(recv.ack_due(), Some(2));
        assert_eq!(recv.ack_due(), None);
        recv.reconnected();
        assert_eq!(
            recv.on_message(true, None),
            Ok(Incoming::Skip),
            "before the Sequence"
        );
        assert_eq!(recv.on_message(false, Some(2)), Ok(Incoming::Skip));
        assert_eq!(recv.on_message(true, None), Ok(Incoming::Skip), "2 again");
        assert_eq!(
            recv.on_message(true, None),
            Ok(Incoming::Process),
            "3 is new"
        );
        assert_eq!(
            recv.on_message(false, Some(9)),
            Err(SequenceError::SequenceAhead {
                got: 9,
                expected: 4
            })
        );
    }

    #[derive(Debug, Clone)]
    enum Step {
        /// The sender sends a message (trackable or not).
        Send(bool),
        /// The link delivers what it carries so far.
        Deliver,
        /// The receiver acknowledges what it processed; the ack reaches the sender.
        Ack,
        /// The transport drops, losing what it carries, and a new one takes over.
        Reconnect,
    }

    fn steps() -> impl Strategy<Value = Vec<Step>> {
        proptest::collection::vec(
            prop_oneof![
                4 => any::<bool>().prop_map(Step::Send),
                3 => Just(Step::Deliver),
                2 => Just(Step::Ack),
                1 => Just(Step::Reconnect),
            ],
            0..80,
        )
    }

    proptest! {
        /// Across any interleaving of sends, deliveries, acks and dropped transports, every
        /// trackable message is processed exactly once and in order, once the link finally
        /// delivers.
        #[test]
        fn every_message_is_processed_once_and_in_order(steps in steps()) {
            let mut send: SendBuffer<u32> = SendBuffer::new(usize::MAX);
            let mut recv = Receiver::new();
            // What is on the wire: (trackable, payload or Sequence id).
            let mut wire: Vec<(bool, Option<u32>, Option<u64>)> = Vec::new();
            let mut processed = Vec::new();
            let mut sent_trackable = 0u32;
            let deliver = |wire: &mut Vec<(bool, Option<u32>, Option<u64>)>, recv: &mut Receiver, processed: &mut Vec<u32>| {
                for (trackable, payload, sequence) in wire.drain(..) {
                    if recv.on_message(trackable, sequence).expect("valid sequence") == Incoming::Process {
                        if let Some(p) = payload {
                            processed.push(p);
                        }
                    }
                }
            };
            for step in steps {
                match step {
                    Step::Send(true) => {
                        sent_trackable += 1;
                        send.push(1, sent_trackable);
                        wire.push((true, Some(sent_trackable), None));
                    }
                    Step::Send(false) => wire.push((false, None, None)),
                    Step::Deliver => deliver(&mut wire, &mut recv, &mut processed),
                    Step::Ack => {
                        if let Some(id) = recv.ack_due() {
                            send.ack(id).expect("acks what was sent");
                        }
                    }
                    Step::Reconnect => {
                        wire.clear();
                        recv.reconnected();
                        let (first, rest) = send.replay();
                        wire.push((false, None, Some(first)));
                        for p in rest {
                            wire.push((true, Some(*p), None));
                        }
                    }
                }
            }
            deliver(&mut wire, &mut recv, &mut processed);
            let expected: Vec<u32> = (1..=sent_trackable).collect();
            prop_assert_eq!(processed, expected);
        }

        /// The buffer never holds more than the limit plus one message.
        #[test]
        fn the_buffer_respects_its_limit(sizes in proptest::collection::vec(1usize..50, 0..40), limit in 1usize..200) {
            let mut send = SendBuffer::new(limit);
            for (i, len) in sizes.into_iter().enumerate() {
                if send.has_room(len) {
                    send.push(len, i);
                } else {
                    // Ack the oldest one to make room, as a peer would.
                    let first = send.replay().0;
                    send.ack(first).expect("acked");
                }
                prop_assert!(send.len() <= 1 || send.bytes() <= limit);
            }
        }
    }
}
