//! The generator's errors: what went wrong opening a connection, decoding a frame, sending a
//! message or driving worker processes. Connection and send errors are counted and sampled in
//! the report rather than ending the run; the others end it.

/// A frame the generator could not decode.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("record without its terminator or length")]
    Unterminated,
    #[error("invalid JSON record: {0}")]
    Json(#[from] serde_json::Error),
    #[error("invalid MessagePack record: {0}")]
    MessagePack(String),
    #[error("a measured message without [seq, sent_at_us, ...] arguments")]
    BadArguments,
    #[error("the server refused the handshake: {0}")]
    Refused(String),
    #[error("frames that are not UTF-8")]
    NotUtf8,
}

/// Why a run (or one of its connections or sends) failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid options: {0}")]
    Config(String),
    #[error("HTTP: {0}")]
    Http(#[from] reqwest::Error),
    #[error("{what} answered HTTP {status}: {body}")]
    Status {
        what: &'static str,
        status: u16,
        body: String,
    },
    #[error("HTTP connection: {0}")]
    Hyper(#[from] hyper::Error),
    #[error("WebSocket: {0}")]
    WebSocket(#[from] tokio_tungstenite::tungstenite::Error),
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("{0}")]
    Protocol(String),
    #[error("timed out: {0}")]
    Timeout(&'static str),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("worker {index}: {message}")]
    Worker { index: usize, message: String },
}

impl Error {
    /// A short, stable description used to group errors in the report.
    pub fn kind(&self) -> String {
        match self {
            Error::Status { what, status, .. } => format!("{what}: HTTP {status}"),
            Error::Http(e) if e.is_timeout() => "HTTP timeout".to_owned(),
            Error::Http(e) if e.is_connect() => "HTTP connect".to_owned(),
            other => {
                let mut s = other.to_string();
                s.truncate(120);
                s
            }
        }
    }
}
