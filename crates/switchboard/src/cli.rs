//! The command line. Every flag can also be set with an environment variable
//! `SWITCHBOARD_<FLAG>` (for example `SWITCHBOARD_LISTEN`, `SWITCHBOARD_ACCESS_KEY`).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "switchboard",
    version,
    about = "A self-hostable, wire-compatible Azure SignalR Service"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a node with the gateway and a store voter (no flags: one local node, ready to use).
    Serve(ServeArgs),
    /// Mint a client access token (and URL) or a REST token from a connection string.
    Token(TokenArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// HTTP listener: client endpoints, REST API, /api/health, /readyz, /metrics.
    #[arg(long, env = "SWITCHBOARD_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Where the Raft log, snapshots and the generated access key live.
    #[arg(
        long,
        env = "SWITCHBOARD_DATA_DIR",
        default_value = "./switchboard-data"
    )]
    pub data_dir: PathBuf,

    /// Access key accepted for tokens; repeat for key rotation (the first one signs).
    /// Without any, a key is generated once and kept in the data dir.
    #[arg(
        long = "access-key",
        env = "SWITCHBOARD_ACCESS_KEY",
        value_delimiter = ','
    )]
    pub access_keys: Vec<String>,

    /// This node's id in the cluster.
    #[arg(long, env = "SWITCHBOARD_NODE_ID", default_value_t = 1)]
    pub node_id: u64,

    /// The endpoint printed in the connection string (default: derived from --listen).
    #[arg(long, env = "SWITCHBOARD_PUBLIC_ENDPOINT")]
    pub public_endpoint: Option<String>,

    /// Log format.
    #[arg(
        long,
        env = "SWITCHBOARD_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,

    /// Seconds shutdown waits for clients to disconnect after being told to reconnect elsewhere.
    #[arg(long, env = "SWITCHBOARD_SHUTDOWN_GRACE", default_value_t = 10)]
    pub shutdown_grace: u64,

    /// Take a store snapshot (and compact the log) after this many log entries.
    #[arg(long, env = "SWITCHBOARD_SNAPSHOT_EVERY", default_value_t = 10_000)]
    pub snapshot_every: u64,

    /// Seconds between keep-alive pings to an otherwise idle client.
    #[arg(long, env = "SWITCHBOARD_KEEP_ALIVE_INTERVAL", default_value_t = 15)]
    pub keep_alive_interval: u64,

    /// Seconds without any message from a client before it is closed.
    #[arg(long, env = "SWITCHBOARD_CLIENT_TIMEOUT", default_value_t = 30)]
    pub client_timeout: u64,

    /// Seconds a new connection has to send its handshake.
    #[arg(long, env = "SWITCHBOARD_HANDSHAKE_TIMEOUT", default_value_t = 15)]
    pub handshake_timeout: u64,

    /// Frames a connection may have queued before it is closed as a slow consumer.
    #[arg(long, env = "SWITCHBOARD_MAX_QUEUED_MESSAGES", default_value_t = 2048)]
    pub max_queued_messages: usize,

    /// Bytes a connection may have queued before it is closed as a slow consumer.
    #[arg(long, env = "SWITCHBOARD_MAX_QUEUED_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub max_queued_bytes: usize,
}

#[derive(Args, Debug, Clone)]
pub struct TokenArgs {
    /// Connection string: Endpoint=...;AccessKey=...;Version=1.0;
    #[arg(long, env = "SWITCHBOARD_CONNECTION_STRING")]
    pub connection_string: String,

    /// Hub the client token is for.
    #[arg(long, default_value = "chat")]
    pub hub: String,

    /// Application name (prefixes the hub as {application}_{hub}).
    #[arg(long)]
    pub application: Option<String>,

    /// User id placed in the token (asrs.s.uid).
    #[arg(long)]
    pub user: Option<String>,

    /// Token lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    pub lifetime: u64,

    /// Mint a REST token for this path or URL (e.g. /api/hubs/chat/:send?api-version=2022-06-01)
    /// instead of a client token.
    #[arg(long)]
    pub rest: Option<String>,

    /// Print one JSON object instead of lines.
    #[arg(long, conflicts_with = "only")]
    pub json: bool,

    /// Print only this value (handy in shell scripts).
    #[arg(long, value_enum)]
    pub only: Option<TokenField>,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum TokenField {
    Url,
    Token,
}
