//! What the upstream's answer to an invocation means for the client.
//!
//! Azure's rules: `200` with a body → the body is the completion message, already framed in
//! the client's protocol (the Functions extension writes it with the hub protocol), forwarded
//! as is; `200` with no body or `204` → an empty completion; anything else → a completion with
//! an error. Switchboard adds one check Azure does not make: a body that is not complete frames
//! of the client's protocol is refused with an error completion, because forwarding it would
//! break the client's parser and so the whole connection.
//!
//! Every way a call can fail is a [`Failure`], whose text is the completion's error (so a
//! client sees `Invocation failed, status code 500`) and whose [`Failure::reason`] labels the
//! failure metric.

use std::time::Duration;

use bytes::Bytes;
use switchboard_protocol::{FrameReader, Protocol};

/// The largest answer accepted (Azure's limit).
pub const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;

/// Why an event did not get a usable answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    #[error("Invocation failed, status code {0}")]
    Status(u16),
    #[error("Invocation failed, the upstream timed out after {} s", .0.as_secs_f64())]
    TimedOut(Duration),
    #[error("Invocation failed, the upstream is unreachable: {0}")]
    Unreachable(String),
    #[error("Invocation failed, response too large.")]
    TooLarge,
    #[error("Invocation failed, no upstream matches hub '{hub}' event '{event}'")]
    NoMatch { hub: String, event: String },
    #[error(
        "Invocation failed, the upstream's answer is not a framed {protocol} completion: {detail}"
    )]
    InvalidAnswer {
        protocol: &'static str,
        detail: String,
    },
    #[error("Invocation failed, too many upstream calls are in flight on this server; try again")]
    Busy,
    #[error("{0}")]
    Unsupported(String),
}

impl Failure {
    /// The metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Failure::Status(_) => "status",
            Failure::TimedOut(_) => "timeout",
            Failure::Unreachable(_) => "unreachable",
            Failure::TooLarge => "too_large",
            Failure::NoMatch { .. } => "no_match",
            Failure::InvalidAnswer { .. } => "invalid_answer",
            Failure::Busy => "busy",
            Failure::Unsupported(_) => "unsupported",
        }
    }

    pub const REASONS: [&'static str; 8] = [
        "status",
        "timeout",
        "unreachable",
        "too_large",
        "no_match",
        "invalid_answer",
        "busy",
        "unsupported",
    ];
}

/// The answer to an invocation: `Ok(Some(frames))` to forward as is, `Ok(None)` for an empty
/// completion, or why it failed.
pub fn interpret(status: u16, body: Bytes, protocol: Protocol) -> Result<Option<Bytes>, Failure> {
    match status {
        200 if body.is_empty() => Ok(None),
        200 => {
            if body.len() > MAX_ANSWER_BYTES {
                return Err(Failure::TooLarge);
            }
            check_frames(&body, protocol).map_err(|detail| Failure::InvalidAnswer {
                protocol: protocol.name(),
                detail,
            })?;
            Ok(Some(body))
        }
        204 => Ok(None),
        other => Err(Failure::Status(other)),
    }
}

/// Checks that `body` is one or more complete frames of `protocol` (and UTF-8 for JSON).
fn check_frames(body: &[u8], protocol: Protocol) -> Result<(), String> {
    if protocol == Protocol::Json && std::str::from_utf8(body).is_err() {
        return Err("it is not UTF-8".into());
    }
    let mut reader = FrameReader::new(protocol, MAX_ANSWER_BYTES);
    reader.push(body);
    let mut frames = 0usize;
    loop {
        match reader.next_frame() {
            Ok(Some(frame)) if frame.is_empty() => return Err("it holds an empty message".into()),
            Ok(Some(_)) => frames += 1,
            Ok(None) => break,
            Err(e) => return Err(e.to_string()),
        }
    }
    if reader.buffered() > 0 {
        return Err(match protocol {
            Protocol::Json => "it does not end with the record separator 0x1E".into(),
            Protocol::MessagePack => "its last frame is incomplete".into(),
        });
    }
    if frames == 0 {
        return Err("it holds no message".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn statuses_map_like_azure() {
        let framed = Bytes::from_static(b"{\"type\":3,\"invocationId\":\"1\",\"result\":2}\x1e");
        assert_eq!(
            interpret(200, framed.clone(), Protocol::Json),
            Ok(Some(framed))
        );
        assert_eq!(interpret(200, Bytes::new(), Protocol::Json), Ok(None));
        assert_eq!(interpret(204, Bytes::new(), Protocol::Json), Ok(None));
        assert_eq!(
            interpret(204, Bytes::from_static(b"junk"), Protocol::Json),
            Ok(None)
        );
        for status in [201, 202, 301, 400, 401, 404, 500, 503] {
            let err =
                interpret(status, Bytes::from_static(b"x\x1e"), Protocol::Json).expect_err("fails");
            assert_eq!(
                err.to_string(),
                format!("Invocation failed, status code {status}")
            );
        }
        let big = Bytes::from(vec![b' '; MAX_ANSWER_BYTES + 1]);
        assert_eq!(interpret(200, big, Protocol::Json), Err(Failure::TooLarge));
        assert_eq!(
            Failure::TooLarge.to_string(),
            "Invocation failed, response too large."
        );
        assert!(Failure::TimedOut(Duration::from_secs(30))
            .to_string()
            .contains("timed out after 30 s"));
        let no = Failure::NoMatch {
            hub: "h".into(),
            event: "e".into(),
        };
        assert_eq!(
            no.to_string(),
            "Invocation failed, no upstream matches hub 'h' event 'e'"
        );
        for f in [no, Failure::Busy, Failure::TooLarge, Failure::Status(1)] {
            assert!(Failure::REASONS.contains(&f.reason()));
        }
    }

    #[test]
    fn answers_must_be_framed() {
        for (body, why) in [
            (
                &b"{\"type\":3,\"invocationId\":\"1\"}"[..],
                "record separator",
            ),
            (&b"\xff\xfe\x1e"[..], "UTF-8"),
            (&b"\x1e"[..], ""),
        ] {
            let err =
                interpret(200, Bytes::copy_from_slice(body), Protocol::Json).expect_err("refused");
            assert_eq!(err.reason(), "invalid_answer", "{body:?}");
            assert!(err.to_string().contains(why), "{err}");
        }
        // Two complete frames in one answer are fine.
        let two = Bytes::from_static(b"{\"type\":6}\x1e{\"type\":3,\"invocationId\":\"1\"}\x1e");
        assert!(interpret(200, two, Protocol::Json).is_ok());
        // MessagePack: a length prefix that matches, or not.
        let ok = Bytes::from_static(b"\x03\x93\x03\x80");
        assert!(interpret(200, ok, Protocol::MessagePack).is_ok());
        let short = Bytes::from_static(b"\x05\x93\x03\x80");
        assert_eq!(
            interpret(200, short, Protocol::MessagePack)
                .expect_err("short")
                .reason(),
            "invalid_answer"
        );
    }

    proptest! {
        /// Any body, any status: no panic, and only 200/204 can succeed.
        #[test]
        fn never_panics(status in 100u16..600, body in proptest::collection::vec(any::<u8>(), 0..64), binary: bool) {
            let protocol = if binary { Protocol::MessagePack } else { Protocol::Json };
            if let Ok(answer) = interpret(status, Bytes::from(body.clone()), protocol) {
                prop_assert!(status == 200 || status == 204);
                if let Some(frames) = answer {
                    prop_assert_eq!(&frames[..], &body[..]);
                }
            }
        }
    }
}
