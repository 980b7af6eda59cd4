//! Reading the message a REST send carries.
//!
//! Three body forms are accepted, chosen by `Content-Type`:
//! - JSON (default): `{"target": "...", "arguments": [...]}` with the keys in any letter case
//!   (the .NET SDK sends `Target`/`Arguments`). The arguments' JSON text is kept verbatim, so JSON
//!   clients get it without a re-serialization.
//! - `application/x-msgpack`: the same object as a MessagePack map.
//! - `application/octet-stream`: a MessagePack map `{json: bin, messagepack: bin}` of frames the
//!   caller serialized for each protocol; they are checked and forwarded as they are.
//!
//! One rule for the arguments of JSON and MessagePack bodies alike: they must reach clients of
//! both protocols, so anything one of them cannot carry is refused with 400 here rather than
//! accepted and silently lost later — nesting deeper than [`MAX_ARGUMENT_DEPTH`] levels inside
//! the arguments array, JSON numbers no 64-bit integer or float can hold (`1e400`), strings
//! that are not Unicode (a lone `\ud800` escape, MessagePack strings that are not UTF-8).

use axum::body::Body;
use axum::http::{header, HeaderMap};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::value::RawValue;
use switchboard_core::{Error, ErrorCode};
use switchboard_protocol::Protocol;

use crate::dispatch::PayloadSource;
use crate::error::{ApiError, ApiResult};

/// How much of an oversized body is still read (and discarded) before answering 413, so a
/// client that is still sending gets the answer instead of a broken pipe. Bodies beyond this
/// are cut off.
const DRAIN_LIMIT: usize = 16 * 1024 * 1024;

/// Reads the body, at most `limit` bytes (413 above).
pub async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> ApiResult<Bytes> {
    let too_large = || {
        ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("The request body exceeds the limit of {limit} bytes."),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut body = body.into_data_stream();
    let mut read = bytes::BytesMut::new();
    let mut over = declared.is_some_and(|length| length > limit as u64);
    let mut seen = 0usize;
    while let Some(chunk) = body.next().await {
        let chunk = chunk
            .map_err(|e| ApiError::invalid(format!("Could not read the request body: {e}")))?;
        seen += chunk.len();
        if over || seen > limit {
            over = true;
            read = bytes::BytesMut::new();
            if seen > DRAIN_LIMIT {
                break;
            }
            continue;
        }
        read.extend_from_slice(&chunk);
    }
    if over {
        return Err(too_large());
    }
    Ok(read.freeze())
}

fn content_type(headers: &HeaderMap) -> &str {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
}

fn missing_body() -> ApiError {
    ApiError(Error::invalid("Message in request body is required.").with_target("message"))
}

fn missing_target() -> ApiError {
    ApiError(
        Error::invalid("The 'target' of the message is required and must be a non-empty string.")
            .with_target("target"),
    )
}

/// Parses a send body into a payload.
pub fn parse(headers: &HeaderMap, body: &[u8]) -> ApiResult<PayloadSource> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(missing_body());
    }
    let ct = content_type(headers).to_ascii_lowercase();
    if ct.starts_with("application/octet-stream") {
        parse_framed(body)
    } else if ct.starts_with("application/x-msgpack") || ct.starts_with("application/msgpack") {
        parse_msgpack(body)
    } else {
        parse_json(body)
    }
}

/// How deep argument values may nest inside the arguments array, for every body form: what the
/// MessagePack codec accepts (its depth limit counts the message array and the arguments array).
pub const MAX_ARGUMENT_DEPTH: usize = switchboard_protocol::MAX_DEPTH - 2;

fn unportable(detail: impl std::fmt::Display) -> ApiError {
    ApiError(
        Error::invalid(format!(
            "The arguments cannot be delivered to every client protocol: {detail}"
        ))
        .with_target("arguments"),
    )
}

fn too_deep() -> ApiError {
    unportable(format!(
        "values nest deeper than {MAX_ARGUMENT_DEPTH} levels"
    ))
}

/// Checks the nesting of JSON argument values (numbers and strings were checked by the parse).
fn check_json_depth(values: &[serde_json::Value]) -> ApiResult<()> {
    // Iteratively: the values came from the network.
    let mut stack: Vec<(&serde_json::Value, usize)> = values.iter().map(|v| (v, 1)).collect();
    while let Some((value, depth)) = stack.pop() {
        let children: Vec<&serde_json::Value> = match value {
            serde_json::Value::Array(items) => items.iter().collect(),
            serde_json::Value::Object(map) => map.values().collect(),
            _ => continue,
        };
        if depth >= MAX_ARGUMENT_DEPTH {
            return Err(too_deep());
        }
        stack.extend(children.into_iter().map(|c| (c, depth + 1)));
    }
    Ok(())
}

/// Checks MessagePack argument values against the rule in the module docs.
fn check_msgpack_arguments(values: &[rmpv::Value]) -> ApiResult<()> {
    let mut stack: Vec<(&rmpv::Value, usize)> = values.iter().map(|v| (v, 1)).collect();
    while let Some((value, depth)) = stack.pop() {
        match value {
            rmpv::Value::String(s) if s.as_str().is_none() => {
                return Err(unportable("a string is not valid UTF-8"))
            }
            rmpv::Value::Array(items) => {
                if depth >= MAX_ARGUMENT_DEPTH {
                    return Err(too_deep());
                }
                stack.extend(items.iter().map(|c| (c, depth + 1)));
            }
            rmpv::Value::Map(entries) => {
                if depth >= MAX_ARGUMENT_DEPTH {
                    return Err(too_deep());
                }
                for (k, v) in entries {
                    stack.push((k, depth + 1));
                    stack.push((v, depth + 1));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn parse_json(body: &[u8]) -> ApiResult<PayloadSource> {
    let object: Vec<(String, &RawValue)> =
        serde_json::from_slice::<std::collections::BTreeMap<String, &RawValue>>(body)
            .map_err(|e| {
                ApiError(
                    Error::invalid(format!("The body is not a valid JSON message object: {e}"))
                        .with_target("message"),
                )
            })?
            .into_iter()
            .collect();
    let field = |name: &str| {
        object
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    };
    let target = match field("target") {
        Some(raw) => match serde_json::from_str::<Option<String>>(raw.get()) {
            Ok(Some(t)) if !t.is_empty() => t,
            _ => return Err(missing_target()),
        },
        None => return Err(missing_target()),
    };
    let arguments = match field("arguments") {
        None => "[]".to_owned(),
        Some(raw) => {
            let text = raw.get();
            match text.trim_start().as_bytes().first() {
                Some(b'[') => {
                    // What a MessagePack client will be sent: it must exist.
                    let values: Vec<serde_json::Value> =
                        serde_json::from_str(text).map_err(|e| {
                            if e.to_string().contains("recursion limit") {
                                too_deep()
                            } else {
                                unportable(e)
                            }
                        })?;
                    check_json_depth(&values)?;
                    text.to_owned()
                }
                _ if text.trim() == "null" => "[]".to_owned(),
                _ => {
                    return Err(ApiError(
                        Error::invalid("'arguments' must be an array.").with_target("arguments"),
                    ))
                }
            }
        }
    };
    Ok(PayloadSource::Json { target, arguments })
}

fn msgpack_error(detail: impl std::fmt::Display) -> ApiError {
    ApiError(
        Error::invalid(format!(
            "The body is not a valid MessagePack message: {detail}"
        ))
        .with_target("message"),
    )
}

fn read_msgpack_map(body: &[u8]) -> ApiResult<Vec<(rmpv::Value, rmpv::Value)>> {
    let mut reader = body;
    let value = rmpv::decode::read_value(&mut reader).map_err(|e| match e {
        rmpv::decode::Error::DepthLimitExceeded => too_deep(),
        e => msgpack_error(e),
    })?;
    match value {
        rmpv::Value::Map(entries) => Ok(entries),
        _ => Err(msgpack_error("expected a map")),
    }
}

fn key_is(key: &rmpv::Value, name: &str) -> bool {
    key.as_str().is_some_and(|k| k.eq_ignore_ascii_case(name))
}

fn parse_msgpack(body: &[u8]) -> ApiResult<PayloadSource> {
    let entries = read_msgpack_map(body)?;
    let target = entries
        .iter()
        .find(|(k, _)| key_is(k, "target"))
        .and_then(|(_, v)| v.as_str())
        .filter(|t| !t.is_empty())
        .ok_or_else(missing_target)?
        .to_owned();
    let arguments = match entries
        .iter()
        .find(|(k, _)| key_is(k, "arguments"))
        .map(|(_, v)| v)
    {
        None | Some(rmpv::Value::Nil) => rmpv::Value::Array(Vec::new()),
        Some(v @ rmpv::Value::Array(items)) => {
            check_msgpack_arguments(items)?;
            v.clone()
        }
        Some(_) => {
            return Err(ApiError(
                Error::invalid("'arguments' must be an array.").with_target("arguments"),
            ))
        }
    };
    let mut bytes = Vec::new();
    rmpv::encode::write_value(&mut bytes, &arguments).map_err(msgpack_error)?;
    Ok(PayloadSource::MessagePack {
        target,
        arguments: Bytes::from(bytes),
    })
}

fn parse_framed(body: &[u8]) -> ApiResult<PayloadSource> {
    let entries = read_msgpack_map(body)?;
    let frame = |name: &str, protocol: Protocol| -> ApiResult<Option<Bytes>> {
        let Some((_, value)) = entries.iter().find(|(k, _)| key_is(k, name)) else {
            return Ok(None);
        };
        let bytes = match value {
            rmpv::Value::Binary(b) => b.clone(),
            rmpv::Value::String(s) => s.as_bytes().to_vec(),
            _ => return Err(msgpack_error(format!("'{name}' must be binary"))),
        };
        switchboard_protocol::validate_framed(protocol, &bytes).map_err(|e| {
            ApiError(
                Error::invalid(format!("The '{name}' frame is invalid: {e}")).with_target(name),
            )
        })?;
        Ok(Some(Bytes::from(bytes)))
    };
    let json = frame("json", Protocol::Json)?;
    let messagepack = frame("messagepack", Protocol::MessagePack)?;
    if json.is_none() && messagepack.is_none() {
        return Err(msgpack_error("expected a 'json' or 'messagepack' frame"));
    }
    Ok(PayloadSource::Framed { json, messagepack })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(body: &str) -> ApiResult<PayloadSource> {
        parse(&HeaderMap::new(), body.as_bytes())
    }

    #[test]
    fn keys_in_any_case_and_raw_arguments_kept() {
        match json(r#"{"Target":"hi","Arguments":[1, {"a": "b"}]}"#).expect("valid") {
            PayloadSource::Json { target, arguments } => {
                assert_eq!(target, "hi");
                assert_eq!(arguments, r#"[1, {"a": "b"}]"#);
            }
            other => panic!("{other:?}"),
        }
        match json(r#"{"target":"x"}"#).expect("valid") {
            PayloadSource::Json { arguments, .. } => assert_eq!(arguments, "[]"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_bodies_are_400() {
        for body in [
            "",
            "  ",
            "[]",
            "{",
            r#"{"arguments":[]}"#,
            r#"{"target":""}"#,
            r#"{"target":null}"#,
            r#"{"target":1}"#,
            r#"{"target":"x","arguments":{}}"#,
        ] {
            let err = json(body).expect_err(body);
            assert_eq!(err.code(), ErrorCode::InvalidArgument, "{body}");
        }
    }

    fn msgpack(value: rmpv::Value) -> ApiResult<PayloadSource> {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            "application/x-msgpack".parse().expect("header"),
        );
        let body = rmpv::Value::Map(vec![
            (rmpv::Value::from("target"), rmpv::Value::from("t")),
            (rmpv::Value::from("arguments"), value),
        ]);
        let mut bytes = Vec::new();
        rmpv::encode::write_value(&mut bytes, &body).expect("encode");
        parse(&headers, &bytes)
    }

    fn nested_json(depth: usize) -> String {
        format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
    }

    fn nested_msgpack(depth: usize) -> rmpv::Value {
        (0..depth).fold(rmpv::Value::from(1), |v, _| rmpv::Value::Array(vec![v]))
    }

    #[test]
    fn arguments_must_reach_every_protocol_by_one_rule() {
        // The same nesting limit for both body forms, just at and just beyond it.
        let limit = MAX_ARGUMENT_DEPTH;
        assert!(json(&format!(
            r#"{{"target":"t","arguments":{}}}"#,
            nested_json(limit)
        ))
        .is_ok());
        assert!(msgpack(nested_msgpack(limit)).is_ok());
        for depth in [limit + 1, 10_000] {
            let error = json(&format!(
                r#"{{"target":"t","arguments":{}}}"#,
                nested_json(depth)
            ))
            .expect_err("too deep");
            assert!(
                error.0.message.contains("nest deeper"),
                "{}",
                error.0.message
            );
            let error = msgpack(nested_msgpack(depth.min(1_000))).expect_err("too deep");
            assert!(
                error.0.message.contains("nest deeper"),
                "{}",
                error.0.message
            );
        }
        // What MessagePack clients could never be sent.
        for args in [
            r#"[1e400]"#,
            r#"[-1e400]"#,
            r#"["\ud800"]"#,
            r#"[{"k":"\udfff x"}]"#,
        ] {
            let error = json(&format!(r#"{{"target":"t","arguments":{args}}}"#)).expect_err(args);
            assert_eq!(error.code(), ErrorCode::InvalidArgument, "{args}");
            assert_eq!(error.0.target.as_deref(), Some("arguments"), "{args}");
        }
        // ... and what JSON clients could never be sent.
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            "application/x-msgpack".parse().expect("header"),
        );
        let mut body = vec![0x82, 0xa6];
        body.extend_from_slice(b"target");
        body.extend_from_slice(&[0xa1, b't', 0xa9]);
        body.extend_from_slice(b"arguments");
        body.extend_from_slice(&[0x91, 0xa2, 0xff, 0xfe]);
        let error = parse(&headers, &body).expect_err("a string that is not UTF-8");
        assert!(error.0.message.contains("UTF-8"), "{}", error.0.message);
        // Big and precise numbers that both protocols carry are fine.
        assert!(json(
            r#"{"target":"t","arguments":[18446744073709551615, -9223372036854775808, 1.5e300]}"#
        )
        .is_ok());
    }

    #[test]
    fn framed_bodies_are_validated() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            "application/octet-stream".parse().expect("header"),
        );
        let map = rmpv::Value::Map(vec![(
            rmpv::Value::from("json"),
            rmpv::Value::Binary(b"{\"type\":1,\"target\":\"t\",\"arguments\":[]}\x1e".to_vec()),
        )]);
        let mut body = Vec::new();
        rmpv::encode::write_value(&mut body, &map).expect("encode");
        assert!(matches!(
            parse(&headers, &body),
            Ok(PayloadSource::Framed {
                json: Some(_),
                messagepack: None
            })
        ));
        let bad = rmpv::Value::Map(vec![(
            rmpv::Value::from("json"),
            rmpv::Value::Binary(b"{no separator".to_vec()),
        )]);
        let mut body = Vec::new();
        rmpv::encode::write_value(&mut body, &bad).expect("encode");
        assert!(parse(&headers, &body).is_err());
    }
}
