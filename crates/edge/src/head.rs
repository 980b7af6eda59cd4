//! A strict reader of HTTP/1.1 request framing, in front of the HTTP server. Pure: bytes in,
//! bytes out.
//!
//! Each request head is held back until it is complete, then validated as a whole: CRLF line
//! endings only (a bare LF or CR is refused: request smuggling relies on parsers that disagree
//! about line ends), a well-formed request line no longer than [`Limits::max_request_line`]
//! (else 414), at most [`Limits::max_headers`] fields and [`Limits::max_header_bytes`] of them
//! (else 431), valid field names and values, no obsolete line folding, exactly one `Host` in
//! HTTP/1.1, and unambiguous framing (`Content-Length` or chunked `Transfer-Encoding`, never
//! both, never two different lengths). Only a valid head is passed on; a bad one becomes a
//! [`Rejection`] that the caller answers with an `ErrorDetail`.
//!
//! Bodies pass through as they arrive; the scanner only counts them (`Content-Length`) or walks
//! their chunk framing (the grammar hyper accepts: any number of leading zeros, 16 significant
//! hex digits, 16 KiB of extensions and of trailers per body), to know where the next head
//! starts. A malformed chunked body ends the connection ([`Rejection::MalformedBody`]: the head
//! was passed on already, so there is no answer to give). A request that asks for a protocol
//! upgrade (a WebSocket) ends the scanning: everything after its head passes through untouched.
//!
//! A bodiless `GET` to one of the scanner's *detach paths* (the client endpoints, whose answers
//! are long-lived: a Server-Sent Events stream, a pending Long Polling poll) is held back
//! instead of passed on: the scanner stops there with the head and whatever followed it
//! ([`Detached`]), for the caller to serve outside the HTTP server (see `detach`).

use std::sync::Arc;

use http::{Method, Uri};

/// Size bounds of a request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest request line (method, target, version), in bytes.
    pub max_request_line: usize,
    /// Most bytes of header fields (request line excluded).
    pub max_header_bytes: usize,
    /// Most header fields.
    pub max_headers: usize,
}

impl Default for Limits {
    /// Azure SignalR's documented bounds: URIs up to 12 KB, headers up to 16 KB.
    fn default() -> Self {
        Limits {
            max_request_line: 12 * 1024,
            max_header_bytes: 16 * 1024,
            max_headers: 100,
        }
    }
}

/// Why a request was refused before it reached the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// Malformed (400).
    BadRequest(String),
    /// The request line is too long (414).
    UriTooLong,
    /// Too many or too large header fields (431).
    HeadersTooLarge(String),
    /// The head or body did not arrive in time (408).
    Timeout(String),
    /// The chunked framing of a body whose head was already passed on is broken: the connection
    /// can only be ended.
    MalformedBody(String),
}

/// Where the scanner is in the byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Between requests: nothing of the next head has arrived.
    Idle,
    /// Inside a request head.
    Head,
    /// Inside a request body.
    Body,
    /// No longer scanning (after an upgrade request or a body the server must judge).
    Passthrough,
    /// Stopped at a request on a detach path ([`Scanner::take_detached`]).
    Detached,
    /// A request was refused; nothing more is passed on.
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Reading the hex size: whether any digit came, how many significant ones, the value.
    Size {
        seen: bool,
        significant: u8,
        size: u64,
    },
    /// After the size: extensions until CR; `len` bytes so far.
    Extension {
        size: u64,
        len: usize,
    },
    /// Expecting LF after the size line.
    SizeLf {
        size: u64,
    },
    Data {
        remaining: u64,
    },
    DataCr,
    DataLf,
    /// Trailer section after the last chunk: `line` bytes into the current line, `total` so far.
    Trailer {
        line: usize,
        total: usize,
    },
    TrailerLf {
        line: usize,
        total: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Idle { empty_lines: u8 },
    Head,
    Length { remaining: u64 },
    Chunked(Chunk),
    Passthrough,
    Detached,
    Failed,
}

const CHUNK_START: Chunk = Chunk::Size {
    seen: false,
    significant: 0,
    size: 0,
};

/// Leading empty lines ignored before a request line (RFC 9112 §2.2).
const MAX_LEADING_EMPTY_LINES: u8 = 4;
/// Chunk extensions allowed per body, in all (hyper's bound).
const MAX_CHUNK_EXTENSIONS: usize = 16 * 1024;
const MAX_TRAILERS: usize = 16 * 1024;

/// The framing state of one connection's request stream (see the module docs).
#[derive(Debug)]
pub struct Scanner {
    limits: Limits,
    state: State,
    /// The head being read.
    head: Vec<u8>,
    /// A CR was the last byte seen in the head or a leading empty line.
    pending_cr: bool,
    /// Where the request line of the current head ends, once it has.
    request_line_end: Option<usize>,
    /// Heads passed on so far.
    heads: u64,
    /// Bytes of chunk extensions in the current body.
    extensions: usize,
    /// Paths whose bodiless `GET`s are detached.
    detach: Arc<[String]>,
    /// The detached request, until taken.
    detached: Option<Detached>,
}

/// A request held back for the caller: its validated head, and the bytes that came after it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Detached {
    pub head: Vec<u8>,
    pub rest: Vec<u8>,
}

/// A validated head: what the scanner needs to know to follow the body.
#[derive(Debug, PartialEq, Eq)]
struct Framing {
    body: Body,
    upgrade: bool,
}

#[derive(Debug, PartialEq, Eq)]
enum Body {
    Length(u64),
    Chunked,
}

impl Scanner {
    pub fn new(limits: Limits) -> Scanner {
        Scanner::detaching(limits, Arc::from([]))
    }

    /// A scanner that stops at bodiless `GET`s to `paths` (exact paths; any query).
    pub fn detaching(limits: Limits, paths: Arc<[String]>) -> Scanner {
        Scanner {
            limits,
            state: State::Idle { empty_lines: 0 },
            head: Vec::new(),
            pending_cr: false,
            request_line_end: None,
            heads: 0,
            extensions: 0,
            detach: paths,
            detached: None,
        }
    }

    /// The detached request, once (the scanner stays [`Phase::Detached`]).
    pub fn take_detached(&mut self) -> Option<Detached> {
        self.detached.take()
    }

    pub fn phase(&self) -> Phase {
        match self.state {
            State::Idle { .. } if !self.pending_cr => Phase::Idle,
            State::Idle { .. } | State::Head => Phase::Head,
            State::Length { .. } | State::Chunked(_) => Phase::Body,
            State::Passthrough => Phase::Passthrough,
            State::Detached => Phase::Detached,
            State::Failed => Phase::Failed,
        }
    }

    /// How many heads have been passed on (valid ones; the rejected one is not counted).
    pub fn heads(&self) -> u64 {
        self.heads
    }

    /// Stops scanning: everything from now on passes through (used when the connection is no
    /// longer HTTP/1, or the caller gives up judging it).
    pub fn pass_through(&mut self) {
        if self.state != State::Failed {
            self.state = State::Passthrough;
        }
    }

    /// Marks the stream as refused (e.g. a timeout decided by the caller).
    pub fn fail(&mut self) {
        self.state = State::Failed;
    }

    /// Scans `input`, appending to `out` every byte the server may see now (complete heads,
    /// body bytes, anything after an upgrade). On a rejection the stream is `Failed` and the
    /// bytes of the bad head are dropped; what was appended before it stays valid.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), Rejection> {
        let mut i = 0;
        while i < input.len() {
            match self.state {
                State::Failed => return Ok(()),
                State::Detached => {
                    if let Some(detached) = self.detached.as_mut() {
                        detached.rest.extend_from_slice(&input[i..]);
                    }
                    return Ok(());
                }
                State::Passthrough => {
                    out.extend_from_slice(&input[i..]);
                    return Ok(());
                }
                State::Length { remaining } => {
                    let take = usize::try_from(remaining)
                        .unwrap_or(usize::MAX)
                        .min(input.len() - i);
                    out.extend_from_slice(&input[i..i + take]);
                    i += take;
                    let remaining = remaining - take as u64;
                    self.state = if remaining == 0 {
                        State::Idle { empty_lines: 0 }
                    } else {
                        State::Length { remaining }
                    };
                }
                State::Chunked(chunk) => match self.chunked(chunk, &input[i..], out) {
                    Ok(consumed) => i += consumed,
                    Err(rejection) => {
                        self.state = State::Failed;
                        return Err(rejection);
                    }
                },
                State::Idle { .. } | State::Head => {
                    // The run of ordinary bytes up to the next CR or LF, in one go.
                    if !self.pending_cr {
                        let rest = &input[i..];
                        let run = rest
                            .iter()
                            .position(|&b| b == b'\r' || b == b'\n')
                            .unwrap_or(rest.len());
                        if run > 0 {
                            self.state = State::Head;
                            self.head.extend_from_slice(&rest[..run]);
                            i += run;
                            if let Err(rejection) = self.check_sizes() {
                                self.state = State::Failed;
                                self.head = Vec::new();
                                return Err(rejection);
                            }
                            continue;
                        }
                    }
                    let byte = input[i];
                    i += 1;
                    if let Err(rejection) = self.head_byte(byte, out) {
                        self.state = State::Failed;
                        self.head = Vec::new();
                        return Err(rejection);
                    }
                }
            }
        }
        Ok(())
    }

    /// One byte of a head (or of the empty lines before it).
    fn head_byte(&mut self, byte: u8, out: &mut Vec<u8>) -> Result<(), Rejection> {
        if self.pending_cr {
            self.pending_cr = false;
            if byte != b'\n' {
                return Err(Rejection::BadRequest(
                    "a CR not followed by LF in the request head".into(),
                ));
            }
            if let State::Idle { empty_lines } = self.state {
                // An empty line before the request line: ignored, within reason.
                if empty_lines >= MAX_LEADING_EMPTY_LINES {
                    return Err(Rejection::BadRequest(
                        "too many empty lines before the request line".into(),
                    ));
                }
                self.state = State::Idle {
                    empty_lines: empty_lines + 1,
                };
                return Ok(());
            }
            self.request_line_end.get_or_insert(self.head.len());
            self.head.extend_from_slice(b"\r\n");
            if self.head.ends_with(b"\r\n\r\n") {
                return self.finish_head(out);
            }
            return Ok(());
        }
        match byte {
            b'\r' => {
                self.pending_cr = true;
                Ok(())
            }
            b'\n' => Err(Rejection::BadRequest(
                "a bare LF in the request head: lines must end with CRLF".into(),
            )),
            _ => {
                self.state = State::Head;
                self.head.push(byte);
                self.check_sizes()
            }
        }
    }

    /// Refuses a head as soon as it can no longer fit, without waiting for its end.
    fn check_sizes(&self) -> Result<(), Rejection> {
        match self.request_line_end {
            None if self.head.len() > self.limits.max_request_line => Err(Rejection::UriTooLong),
            None => Ok(()),
            Some(end) => {
                let fields = self.head.len() - end - 2;
                if fields > self.limits.max_header_bytes {
                    Err(Rejection::HeadersTooLarge(format!(
                        "request header fields exceed {} bytes",
                        self.limits.max_header_bytes
                    )))
                } else {
                    Ok(())
                }
            }
        }
    }

    fn finish_head(&mut self, out: &mut Vec<u8>) -> Result<(), Rejection> {
        let framing = validate(&self.head, &self.limits)?;
        if !framing.upgrade
            && framing.body == Body::Length(0)
            && detachable(&self.head, &self.detach)
        {
            self.request_line_end = None;
            self.detached = Some(Detached {
                head: std::mem::take(&mut self.head),
                rest: Vec::new(),
            });
            self.state = State::Detached;
            return Ok(());
        }
        out.extend_from_slice(&self.head);
        if framing.upgrade {
            // Scanning ends here: an upgraded connection keeps no buffer.
            self.head = Vec::new();
        } else {
            self.head.clear();
        }
        self.request_line_end = None;
        self.heads += 1;
        self.state = match (framing.upgrade, framing.body) {
            (true, _) => State::Passthrough,
            (false, Body::Length(0)) => State::Idle { empty_lines: 0 },
            (false, Body::Length(n)) => State::Length { remaining: n },
            (false, Body::Chunked) => {
                self.extensions = 0;
                State::Chunked(CHUNK_START)
            }
        };
        Ok(())
    }

    /// Walks chunked framing over `input`, passing it on; returns how many bytes it consumed.
    fn chunked(
        &mut self,
        mut chunk: Chunk,
        input: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<usize, Rejection> {
        let mut i = 0;
        while i < input.len() {
            if let Chunk::Data { remaining } = chunk {
                let take = usize::try_from(remaining)
                    .unwrap_or(usize::MAX)
                    .min(input.len() - i);
                out.extend_from_slice(&input[i..i + take]);
                i += take;
                let remaining = remaining - take as u64;
                chunk = if remaining == 0 {
                    Chunk::DataCr
                } else {
                    Chunk::Data { remaining }
                };
                continue;
            }
            let byte = input[i];
            out.push(byte);
            i += 1;
            let next = match chunk {
                Chunk::Size {
                    seen,
                    significant,
                    size,
                } => match (byte as char).to_digit(16) {
                    // Leading zeros are not significant.
                    Some(0) if size == 0 => Some(Chunk::Size {
                        seen: true,
                        significant,
                        size,
                    }),
                    Some(d) if significant < 16 => Some(Chunk::Size {
                        seen: true,
                        significant: significant + 1,
                        size: size << 4 | u64::from(d),
                    }),
                    None if seen && byte == b'\r' => Some(Chunk::SizeLf { size }),
                    None if seen && (byte == b';' || byte == b' ' || byte == b'\t') => {
                        Some(Chunk::Extension { size, len: 1 })
                    }
                    _ => None,
                },
                Chunk::Extension { size, len } => {
                    self.extensions += 1;
                    match byte {
                        b'\r' => Some(Chunk::SizeLf { size }),
                        b'\n' => None,
                        _ if self.extensions <= MAX_CHUNK_EXTENSIONS => {
                            Some(Chunk::Extension { size, len: len + 1 })
                        }
                        _ => None,
                    }
                }
                Chunk::SizeLf { size } => match byte {
                    b'\n' if size == 0 => Some(Chunk::Trailer { line: 0, total: 0 }),
                    b'\n' => Some(Chunk::Data { remaining: size }),
                    _ => None,
                },
                Chunk::Data { .. } => None,
                Chunk::DataCr => (byte == b'\r').then_some(Chunk::DataLf),
                Chunk::DataLf => (byte == b'\n').then_some(CHUNK_START),
                Chunk::Trailer { line, total } => match byte {
                    b'\r' => Some(Chunk::TrailerLf { line, total }),
                    b'\n' => None,
                    _ if total < MAX_TRAILERS => Some(Chunk::Trailer {
                        line: line + 1,
                        total: total + 1,
                    }),
                    _ => None,
                },
                Chunk::TrailerLf { line, total } => match byte {
                    b'\n' if line == 0 => {
                        self.state = State::Idle { empty_lines: 0 };
                        return Ok(i);
                    }
                    b'\n' => Some(Chunk::Trailer {
                        line: 0,
                        total: total + 2,
                    }),
                    _ => None,
                },
            };
            match next {
                Some(next) => chunk = next,
                None => {
                    return Err(Rejection::MalformedBody(
                        "the chunked framing of the request body is broken".into(),
                    ))
                }
            }
        }
        self.state = State::Chunked(chunk);
        Ok(i)
    }
}

/// Whether a valid head is a `GET` to one of `paths`.
fn detachable(head: &[u8], paths: &[String]) -> bool {
    let Some(target) = head.strip_prefix(b"GET ") else {
        return false;
    };
    let end = target
        .iter()
        .position(|&b| b == b' ' || b == b'?')
        .unwrap_or(target.len());
    paths.iter().any(|p| p.as_bytes() == &target[..end])
}

fn bad(message: impl Into<String>) -> Rejection {
    Rejection::BadRequest(message.into())
}

/// Validates a complete head (ending with an empty line) and says how its body is framed.
fn validate(head: &[u8], limits: &Limits) -> Result<Framing, Rejection> {
    // The head ends with CRLF CRLF and contains no other bare CR or LF (checked while reading).
    let body = &head[..head.len() - 4];
    let mut lines = body
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let request_line = lines.next().unwrap_or_default();
    if request_line.len() > limits.max_request_line {
        return Err(Rejection::UriTooLong);
    }
    let mut parts = request_line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad(
            "the request line must be METHOD SP TARGET SP HTTP-VERSION, single spaces",
        ));
    };
    let method = Method::from_bytes(method).map_err(|_| bad("invalid request method"))?;
    if method == Method::CONNECT {
        return Err(bad("CONNECT is not supported"));
    }
    let http11 = match version {
        b"HTTP/1.1" => true,
        b"HTTP/1.0" => false,
        _ => return Err(bad("only HTTP/1.1 and HTTP/1.0 are served here")),
    };
    if target.is_empty() || Uri::try_from(target).is_err() {
        return Err(bad("invalid request target"));
    }
    if !(target.starts_with(b"/") || target == b"*" || target.starts_with(b"http")) {
        return Err(bad("the request target must be an absolute path"));
    }

    let mut count = 0usize;
    let mut hosts = 0usize;
    let mut lengths: Vec<&[u8]> = Vec::new();
    let mut encodings: Vec<Vec<u8>> = Vec::new();
    let mut connection_upgrade = false;
    let mut upgrade = false;
    for line in lines {
        count += 1;
        if count > limits.max_headers {
            return Err(Rejection::HeadersTooLarge(format!(
                "more than {} request header fields",
                limits.max_headers
            )));
        }
        if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            return Err(bad("obsolete line folding in a header field"));
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Err(bad("a header field without ':'"));
        };
        let (name, value) = (&line[..colon], trim(&line[colon + 1..]));
        // A token (so no whitespace between the name and the colon, RFC 9112 §5.1), and a value
        // without control characters: exactly what `http::HeaderName` / `HeaderValue` accept.
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            return Err(bad("invalid header field name"));
        }
        if !value
            .iter()
            .all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f))
        {
            return Err(bad("invalid header field value"));
        }
        if name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
        } else if name.eq_ignore_ascii_case(b"content-length") {
            lengths.extend(value.split(|&b| b == b',').map(trim));
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            encodings.extend(
                value
                    .split(|&b| b == b',')
                    .map(|e| trim(e).to_ascii_lowercase())
                    .filter(|e| !e.is_empty()),
            );
        } else if name.eq_ignore_ascii_case(b"connection") {
            connection_upgrade |= value
                .split(|&b| b == b',')
                .any(|t| trim(t).eq_ignore_ascii_case(b"upgrade"));
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            upgrade = true;
        }
    }
    if http11 && hosts != 1 {
        return Err(bad("an HTTP/1.1 request needs exactly one Host header"));
    }
    if hosts > 1 {
        return Err(bad("more than one Host header"));
    }
    let body = if !encodings.is_empty() {
        if !lengths.is_empty() {
            return Err(bad("both Transfer-Encoding and Content-Length"));
        }
        if !http11 {
            return Err(bad("Transfer-Encoding in an HTTP/1.0 request"));
        }
        if encodings.last().map(Vec::as_slice) != Some(b"chunked")
            || encodings
                .iter()
                .filter(|e| e.as_slice() == b"chunked")
                .count()
                != 1
        {
            return Err(bad(
                "the request's Transfer-Encoding must end with a single chunked",
            ));
        }
        Body::Chunked
    } else if let Some(first) = lengths.first() {
        if lengths.iter().any(|l| l != first) {
            return Err(bad("conflicting Content-Length values"));
        }
        if first.is_empty() || first.len() > 19 || !first.iter().all(u8::is_ascii_digit) {
            return Err(bad("invalid Content-Length"));
        }
        let n = std::str::from_utf8(first)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("invalid Content-Length"))?;
        Body::Length(n)
    } else {
        Body::Length(0)
    };
    Ok(Framing {
        body,
        upgrade: connection_upgrade && upgrade,
    })
}

/// A token character (RFC 9110 §5.6.2).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|b| *b != b' ' && *b != b'\t')
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|b| *b != b' ' && *b != b'\t')
        .map_or(start, |e| e + 1);
    &s[start..end.max(start)]
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn scan(input: &[u8]) -> (Result<(), Rejection>, Vec<u8>, Phase) {
        let mut scanner = Scanner::new(Limits::default());
        let mut out = Vec::new();
        let result = scanner.feed(input, &mut out);
        (result, out, scanner.phase())
    }

    fn ok(input: &str) -> Vec<u8> {
        let (result, out, _) = scan(input.as_bytes());
        assert_eq!(result, Ok(()), "{input:?}");
        out
    }

    fn rejected(input: &str) -> Rejection {
        let (result, out, phase) = scan(input.as_bytes());
        assert_eq!(phase, Phase::Failed, "{input:?}");
        assert!(
            out.is_empty(),
            "nothing of a bad head is passed on: {input:?}"
        );
        result.expect_err(input)
    }

    const GET: &str = "GET /api/health HTTP/1.1\r\nHost: h\r\n\r\n";

    #[test]
    fn valid_requests_pass_unchanged() {
        assert_eq!(ok(GET), GET.as_bytes());
        let post = "POST /api/hubs/h/:send?api-version=2022-06-01 HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello";
        assert_eq!(ok(post), post.as_bytes());
        let chunked = "POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nTrailer: t\r\n\r\n";
        let pipelined = format!("{chunked}{GET}{GET}");
        assert_eq!(ok(&pipelined), pipelined.as_bytes());
        let http10 = "GET / HTTP/1.0\r\n\r\n";
        assert_eq!(ok(http10), http10.as_bytes());
        // Leading empty lines are dropped.
        assert_eq!(ok(&format!("\r\n\r\n{GET}")), GET.as_bytes());
    }

    #[test]
    fn heads_are_held_back_until_complete() {
        let mut scanner = Scanner::new(Limits::default());
        let mut out = Vec::new();
        let (a, b) = GET.split_at(20);
        scanner.feed(a.as_bytes(), &mut out).unwrap();
        assert!(out.is_empty());
        assert_eq!(scanner.phase(), Phase::Head);
        scanner.feed(b.as_bytes(), &mut out).unwrap();
        assert_eq!(out, GET.as_bytes());
        assert_eq!(scanner.phase(), Phase::Idle);
        assert_eq!(scanner.heads(), 1);
    }

    #[test]
    fn line_endings_must_be_crlf() {
        for input in [
            "GET / HTTP/1.1\nHost: h\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: h\n\r\n",
            "GET / HTTP/1.1\r\nHost: h\r\n\n",
            "GET / HTTP/1.1\r\nHost: h\rX: y\r\n\r\n",
            "\nGET / HTTP/1.1\r\nHost: h\r\n\r\n",
        ] {
            assert!(
                matches!(rejected(input), Rejection::BadRequest(m) if m.contains("LF") || m.contains("CR")),
                "{input:?}"
            );
        }
    }

    #[test]
    fn malformed_heads() {
        for input in [
            "GET  / HTTP/1.1\r\nHost: h\r\n\r\n",
            "GET / HTTP/1.1 \r\nHost: h\r\n\r\n",
            "GET /\r\nHost: h\r\n\r\n",
            "G(T / HTTP/1.1\r\nHost: h\r\n\r\n",
            "GET / HTTP/2.0\r\nHost: h\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "GET x HTTP/1.1\r\nHost: h\r\n\r\n",
            "GET /a\x7fb HTTP/1.1\r\nHost: h\r\n\r\n",
            "CONNECT h:443 HTTP/1.1\r\nHost: h\r\n\r\n",
            "GET / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost : h\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: h\r\n folded\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: h\r\nNoColon\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: h\r\nX: a\x01b\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 6\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            "\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n",
        ] {
            assert!(
                matches!(rejected(input), Rejection::BadRequest(_)),
                "{input:?}"
            );
        }
        // Repeated identical lengths are one length.
        ok("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok");
    }

    #[test]
    fn size_limits() {
        let long_target = format!("GET /{} HTTP/1.1\r\nHost: h\r\n\r\n", "a".repeat(12 * 1024));
        assert_eq!(rejected(&long_target), Rejection::UriTooLong);
        let big = format!(
            "GET / HTTP/1.1\r\nHost: h\r\nX: {}\r\n\r\n",
            "a".repeat(16 * 1024)
        );
        assert!(matches!(rejected(&big), Rejection::HeadersTooLarge(_)));
        let many: String = (0..101).map(|i| format!("X-{i}: v\r\n")).collect();
        let many = format!("GET / HTTP/1.1\r\nHost: h\r\n{many}\r\n");
        assert!(matches!(rejected(&many), Rejection::HeadersTooLarge(_)));
        // An endless request line is refused without waiting for its end.
        let mut scanner = Scanner::new(Limits::default());
        let mut out = Vec::new();
        assert_eq!(
            scanner.feed(&vec![b'a'; 13 * 1024], &mut out),
            Err(Rejection::UriTooLong)
        );
    }

    #[test]
    fn an_upgrade_ends_scanning() {
        let upgrade = "GET /client/?id=x HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n";
        let mut input = upgrade.as_bytes().to_vec();
        input.extend_from_slice(b"\x81\x05hello\n\r\nanything");
        let (result, out, phase) = scan(&input);
        assert_eq!(result, Ok(()));
        assert_eq!(out, input);
        assert_eq!(phase, Phase::Passthrough);
    }

    #[test]
    fn gets_to_a_detach_path_are_held_back_with_what_follows() {
        let paths: Arc<[String]> = Arc::from(vec!["/client".to_owned(), "/client/".to_owned()]);
        let sse =
            "GET /client/?hub=h&id=x HTTP/1.1\r\nHost: h\r\nAccept: text/event-stream\r\n\r\n";
        let post = "POST /client/?hub=h HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi";
        let ws = "GET /client/?hub=h HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";
        // Requests before it pass as usual; the detached one and what follows are held.
        let mut scanner = Scanner::detaching(Limits::default(), paths.clone());
        let mut out = Vec::new();
        let input = format!("{GET}{post}{sse}{GET}");
        let (a, b) = input.split_at(GET.len() + post.len() + 10);
        scanner.feed(a.as_bytes(), &mut out).unwrap();
        scanner.feed(b.as_bytes(), &mut out).unwrap();
        assert_eq!(out, format!("{GET}{post}").as_bytes());
        assert_eq!(scanner.phase(), Phase::Detached);
        assert_eq!(scanner.heads(), 2);
        scanner.feed(b"more", &mut out).unwrap();
        let detached = scanner.take_detached().unwrap();
        assert_eq!(detached.head, sse.as_bytes());
        assert_eq!(detached.rest, format!("{GET}more").as_bytes());
        assert!(scanner.take_detached().is_none());
        // Bodies, upgrades, other methods and other paths are not detached.
        for other in [
            post.to_owned(),
            ws.to_owned(),
            GET.to_owned(),
            "GET /clientx HTTP/1.1\r\nHost: h\r\n\r\n".to_owned(),
            "GET /client/negotiate HTTP/1.1\r\nHost: h\r\n\r\n".to_owned(),
            "DELETE /client/?id=x HTTP/1.1\r\nHost: h\r\n\r\n".to_owned(),
            "GET /client/?id=x HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc".to_owned(),
        ] {
            let mut scanner = Scanner::detaching(Limits::default(), paths.clone());
            let mut out = Vec::new();
            scanner.feed(other.as_bytes(), &mut out).unwrap();
            assert_eq!(out, other.as_bytes(), "{other:?}");
            assert_ne!(scanner.phase(), Phase::Detached);
        }
        // Both spellings of the path, with or without a query.
        for path in ["/client", "/client/", "/client?id=1"] {
            let mut scanner = Scanner::detaching(Limits::default(), paths.clone());
            let mut out = Vec::new();
            let head = format!("GET {path} HTTP/1.1\r\nHost: h\r\n\r\n");
            scanner.feed(head.as_bytes(), &mut out).unwrap();
            assert!(out.is_empty());
            assert_eq!(scanner.phase(), Phase::Detached, "{path}");
        }
    }

    #[test]
    fn a_valid_request_before_a_bad_one_is_passed_on() {
        let input = format!("{GET}GET / HTTP/1.1\nHost: h\r\n\r\n");
        let (result, out, phase) = scan(input.as_bytes());
        assert!(result.is_err());
        assert_eq!(out, GET.as_bytes());
        assert_eq!(phase, Phase::Failed);
    }

    #[test]
    fn bad_chunked_framing_ends_the_stream() {
        let head = "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n";
        for body in [
            "zz\r\n".to_owned(),
            "5\nhello\r\n".to_owned(),
            "5\r\nhelloX\r\n".to_owned(),
            format!("1{}\r\n", "0".repeat(16)),
            format!("1;{}\r\n", "e".repeat(17 * 1024)),
        ] {
            let (result, out, phase) = scan(format!("{head}{body}").as_bytes());
            assert!(
                matches!(result, Err(Rejection::MalformedBody(_))),
                "{body:?}"
            );
            assert_eq!(phase, Phase::Failed);
            assert!(out.starts_with(head.as_bytes()), "the head was passed on");
        }
        // What hyper accepts passes: leading zeros, sixteen significant digits' worth of
        // framing, extensions, trailers.
        let ok = format!(
            "{head}{}5;a=b;c\r\nhello\r\n0\r\nX-T: 1\r\n\r\n",
            "0".repeat(40)
        );
        let (result, out, phase) = scan(ok.as_bytes());
        assert_eq!(result, Ok(()));
        assert_eq!(out, ok.as_bytes());
        assert_eq!(phase, Phase::Idle);
    }

    /// A valid request: method, path, headers and a body framed either way.
    fn request() -> impl Strategy<Value = Vec<u8>> {
        (
            prop::sample::select(vec!["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS"]),
            "/[a-z0-9/%._-]{0,40}(\\?[a-z0-9=&-]{0,20})?",
            prop::collection::vec(("[A-Za-z][A-Za-z0-9-]{0,15}", "[ -~]{0,30}"), 0..8),
            prop::collection::vec(any::<u8>(), 0..200),
            any::<bool>(),
            prop::collection::vec(1usize..50, 0..5),
        )
            .prop_map(|(method, path, headers, body, chunked, sizes)| {
                let mut out = format!("{method} {path} HTTP/1.1\r\nHost: example\r\n").into_bytes();
                for (name, value) in headers {
                    let lower = name.to_ascii_lowercase();
                    if [
                        "host",
                        "content-length",
                        "transfer-encoding",
                        "connection",
                        "upgrade",
                    ]
                    .contains(&lower.as_str())
                    {
                        continue;
                    }
                    out.extend_from_slice(format!("{name}: {}\r\n", value.trim()).as_bytes());
                }
                if chunked {
                    out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                    let mut rest = &body[..];
                    for size in sizes {
                        let take = size.min(rest.len());
                        if take == 0 {
                            break;
                        }
                        out.extend_from_slice(format!("{take:x}\r\n").as_bytes());
                        out.extend_from_slice(&rest[..take]);
                        out.extend_from_slice(b"\r\n");
                        rest = &rest[take..];
                    }
                    out.extend_from_slice(b"0\r\n\r\n");
                } else {
                    out.extend_from_slice(
                        format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes(),
                    );
                    out.extend_from_slice(&body);
                }
                out
            })
    }

    proptest! {
        #[test]
        fn field_checks_agree_with_the_http_crate(name in prop::collection::vec(any::<u8>(), 0..12), value in prop::collection::vec(any::<u8>(), 0..12)) {
            let ours_name = !name.is_empty() && name.iter().all(|&b| is_tchar(b));
            prop_assert_eq!(ours_name, http::HeaderName::from_bytes(&name).is_ok(), "{:?}", name);
            let ours_value = value.iter().all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f));
            prop_assert_eq!(ours_value, http::HeaderValue::from_bytes(&value).is_ok(), "{:?}", value);
        }

        #[test]
        fn valid_pipelines_pass_unchanged_however_they_are_split(
            requests in prop::collection::vec(request(), 1..5),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..10),
        ) {
            let input: Vec<u8> = requests.concat();
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(input.len() + 1)).collect();
            cuts.sort_unstable();
            let mut scanner = Scanner::new(Limits::default());
            let mut out = Vec::new();
            let mut start = 0;
            for cut in cuts.into_iter().chain([input.len()]) {
                scanner.feed(&input[start..cut], &mut out).unwrap();
                start = cut;
            }
            prop_assert_eq!(out, input);
            prop_assert_eq!(scanner.phase(), Phase::Idle);
            prop_assert_eq!(scanner.heads(), requests.len() as u64);
        }

        #[test]
        fn a_bare_lf_in_any_head_line_is_refused(request in request(), at in any::<prop::sample::Index>()) {
            let head_end = request.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
            let crs: Vec<usize> = (0..head_end + 3).filter(|&i| request[i] == b'\r').collect();
            let cr = crs[at.index(crs.len())];
            let mut bad = request.clone();
            bad.remove(cr);
            let (result, out, _) = scan(&bad);
            prop_assert!(result.is_err());
            prop_assert!(out.is_empty());
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_never_exceed_the_input(input in prop::collection::vec(any::<u8>(), 0..2000)) {
            let (_, out, _) = scan(&input);
            prop_assert!(out.len() <= input.len());
        }
    }
}
