//! The command line. Every flag can also be set with an environment variable
//! `SWITCHBOARD_<FLAG>` (for example `SWITCHBOARD_LISTEN`, `SWITCHBOARD_ACCESS_KEY`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

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
    /// Run a stateless gateway in front of a store cluster (--store).
    Gateway(GatewayArgs),
    /// Run a store voter only.
    Store(StoreArgs),
    /// Mint a client access token (and URL) or a REST token from a connection string.
    Token(TokenArgs),
    /// Operate the store: its status, adding and removing voters (talks to any voter).
    Cluster(ClusterArgs),
}

#[derive(Args, Debug, Clone)]
pub struct ClusterArgs {
    #[command(subcommand)]
    pub action: ClusterAction,
}

#[derive(Subcommand, Debug, Clone)]
pub enum ClusterAction {
    /// Voters, learners, the leader and term, and (from the leader) each node's log lag and
    /// last contact.
    Status(ClusterConn),
    /// Adds a node as a learner, waits until it has caught up, then makes it a voter.
    AddVoter {
        /// ID=HOST:PORT: the node's id and cluster address.
        member: Member,
        #[command(flatten)]
        conn: ClusterConn,
    },
    /// Removes a voter or a learner (the leader too: it hands its leadership over first).
    RemoveVoter {
        /// The voter's node id.
        id: u64,
        #[command(flatten)]
        conn: ClusterConn,
    },
    /// Moves the leadership to a voter (writes pause for about one election timeout).
    TransferLeader {
        /// The voter's node id.
        id: u64,
        #[command(flatten)]
        conn: ClusterConn,
    },
}

/// How `switchboard cluster` reaches the store.
#[derive(Args, Debug, Clone)]
pub struct ClusterConn {
    /// Store voters' cluster addresses, HOST:PORT,...: any one that answers will do.
    #[arg(long, env = "SWITCHBOARD_STORE")]
    pub store: Voters,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub keys: KeyFlags,
    #[command(flatten)]
    pub cluster: ClusterFlags,
}

/// `ID=HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: u64,
    pub address: String,
}

impl FromStr for Member {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (id, address) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?} is not ID=HOST:PORT"))?;
        let id = match id.trim().parse::<u64>() {
            Ok(0) | Err(_) => return Err(format!("{id:?} is not a node id (a number from 1)")),
            Ok(id) => id,
        };
        let address = address.trim();
        if address
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u16>().ok())
            .is_none()
        {
            return Err(format!("{address:?} is not HOST:PORT"));
        }
        Ok(Member {
            id,
            address: address.to_owned(),
        })
    }
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// A node id: a number, or `from-hostname` (the StatefulSet ordinal of the host name + 1, so
/// pod `switchboard-store-2` is node 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeIdArg {
    Fixed(u64),
    FromHostname,
}

impl FromStr for NodeIdArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "from-hostname" {
            return Ok(NodeIdArg::FromHostname);
        }
        match s.parse::<u64>() {
            Ok(0) | Err(_) => Err(format!(
                "{s:?} is not a node id (a number from 1, or from-hostname)"
            )),
            Ok(n) => Ok(NodeIdArg::Fixed(n)),
        }
    }
}

impl NodeIdArg {
    /// The numeric id, reading the host name when asked to.
    pub fn resolve(self) -> Result<u64, String> {
        match self {
            NodeIdArg::Fixed(n) => Ok(n),
            NodeIdArg::FromHostname => {
                let host = std::env::var("HOSTNAME")
                    .ok()
                    .filter(|h| !h.is_empty())
                    .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
                    .map(|h| h.trim().to_owned())
                    .ok_or("--node-id from-hostname: the host name is unknown")?;
                ordinal_of(&host).map(|o| o + 1).ok_or_else(|| {
                    format!(
                        "--node-id from-hostname: host name {host:?} does not end in -<ordinal>"
                    )
                })
            }
        }
    }
}

fn ordinal_of(host: &str) -> Option<u64> {
    let first_label = host.split('.').next()?;
    first_label.rsplit_once('-')?.1.parse().ok()
}

/// `--peers 1=host:port,2=host:port,...`: every voter's id and cluster address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peers(pub BTreeMap<u64, String>);

impl FromStr for Peers {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut peers = BTreeMap::new();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (id, addr) = item
                .split_once('=')
                .ok_or_else(|| format!("{item:?} is not ID=HOST:PORT"))?;
            let id: u64 = id
                .trim()
                .parse()
                .map_err(|_| format!("{id:?} is not a node id"))?;
            if id == 0 {
                return Err("node ids start at 1".into());
            }
            let addr = addr.trim();
            if addr
                .rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok())
                .is_none()
            {
                return Err(format!("{addr:?} is not HOST:PORT"));
            }
            if peers.insert(id, addr.to_owned()).is_some() {
                return Err(format!("node {id} is listed twice"));
            }
        }
        if peers.is_empty() {
            return Err("no peers listed".into());
        }
        Ok(Peers(peers))
    }
}

/// `--store host:port,host:port`: the voters' cluster addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Voters(pub Vec<String>);

impl FromStr for Voters {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let voters: Vec<String> = s
            .split(',')
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
            .collect();
        for v in &voters {
            if v.rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok())
                .is_none()
            {
                return Err(format!("{v:?} is not HOST:PORT"));
            }
        }
        if voters.is_empty() {
            return Err("no store voters listed".into());
        }
        Ok(Voters(voters))
    }
}

/// The access keys: every key is accepted, the first signs (key rotation).
#[derive(Args, Debug, Clone, Default)]
pub struct KeyFlags {
    /// Access key accepted for tokens (and, without --cluster-key, proved between the nodes of
    /// a cluster); repeat for key rotation (the first one signs).
    #[arg(
        long = "access-key",
        env = "SWITCHBOARD_ACCESS_KEY",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub access_keys: Vec<String>,

    /// File holding access keys, one per line (the first signs), read at start: keeps keys out
    /// of `ps` and the environment. Repeatable; combined with --access-key.
    #[arg(
        long = "access-key-file",
        env = "SWITCHBOARD_ACCESS_KEY_FILE",
        value_delimiter = ','
    )]
    pub access_key_files: Vec<PathBuf>,
}

/// How the nodes of a cluster authenticate each other.
#[derive(Args, Debug, Clone)]
pub struct ClusterFlags {
    /// Secret every node of the cluster proves on the cluster listener, instead of the access
    /// keys; repeat for rotation (the first one signs, every one is accepted).
    #[arg(
        long = "cluster-key",
        env = "SWITCHBOARD_CLUSTER_KEY",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub cluster_keys: Vec<String>,

    /// File holding cluster keys, one per line; combined with --cluster-key.
    #[arg(
        long = "cluster-key-file",
        env = "SWITCHBOARD_CLUSTER_KEY_FILE",
        value_delimiter = ','
    )]
    pub cluster_key_files: Vec<PathBuf>,

    /// PEM certificate (chain) this node presents on the cluster plane (mutual TLS; with
    /// --cluster-tls-key and --cluster-tls-ca). Re-read when the file changes.
    #[arg(long, env = "SWITCHBOARD_CLUSTER_TLS_CERT")]
    pub cluster_tls_cert: Option<PathBuf>,

    /// PEM private key of --cluster-tls-cert.
    #[arg(long, env = "SWITCHBOARD_CLUSTER_TLS_KEY")]
    pub cluster_tls_key: Option<PathBuf>,

    /// PEM CA certificate(s): peers must present a certificate signed by one of them.
    #[arg(long, env = "SWITCHBOARD_CLUSTER_TLS_CA")]
    pub cluster_tls_ca: Option<PathBuf>,

    /// Largest gRPC message between nodes, in bytes, each way (at least 4 MiB).
    #[arg(
        long,
        env = "SWITCHBOARD_CLUSTER_MAX_MESSAGE_SIZE",
        default_value_t = switchboard_net::DEFAULT_MAX_MESSAGE_BYTES
    )]
    pub cluster_max_message_size: usize,
}

/// The public HTTP listener (`--listen`).
#[derive(Args, Debug, Clone)]
pub struct HttpFlags {
    /// PEM certificate (chain) for HTTPS on --listen (with --tls-key). Re-read when it changes.
    #[arg(long, env = "SWITCHBOARD_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, env = "SWITCHBOARD_TLS_KEY")]
    pub tls_key: Option<PathBuf>,

    /// Seconds a client has to send a request's head once it started it (or, on a new
    /// connection, its first byte), and the grace before a slow body must keep pace.
    #[arg(long, env = "SWITCHBOARD_HTTP_HEADER_TIMEOUT", default_value_t = 10)]
    pub http_header_timeout: u64,

    /// Seconds an HTTP connection may stay open between requests (WebSockets are not idle:
    /// they have their own keep-alive and client timeout).
    #[arg(long, env = "SWITCHBOARD_HTTP_IDLE_TIMEOUT", default_value_t = 120)]
    pub http_idle_timeout: u64,
}

/// Settings of the client-facing gateway, shared by `serve` and `gateway`.
#[derive(Args, Debug, Clone)]
pub struct GatewayFlags {
    #[command(flatten)]
    pub keys: KeyFlags,

    #[command(flatten)]
    pub http: HttpFlags,

    /// Client connections this process holds at most; negotiate and connect are answered 429
    /// beyond (default: derived from the open-file limit, leaving room for REST, the store and
    /// the cluster).
    #[arg(long, env = "SWITCHBOARD_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,

    /// Seconds a connection token from negotiate stays valid for connecting.
    #[arg(
        long,
        env = "SWITCHBOARD_CONNECTION_TOKEN_LIFETIME",
        default_value_t = 5
    )]
    pub connection_token_lifetime: u64,

    /// The endpoint printed in the connection string (default: derived from --listen).
    #[arg(long, env = "SWITCHBOARD_PUBLIC_ENDPOINT")]
    pub public_endpoint: Option<String>,

    /// Print the connection string (with the access key) on stdout at start. Turn it off where
    /// stdout is collected as logs and the key must not end up there.
    #[arg(long, env = "SWITCHBOARD_PRINT_CONNECTION_STRING", default_value_t = true, action = clap::ArgAction::Set)]
    pub print_connection_string: bool,

    /// Seconds shutdown waits for clients to disconnect after being told to reconnect elsewhere.
    #[arg(long, env = "SWITCHBOARD_SHUTDOWN_GRACE", default_value_t = 10)]
    pub shutdown_grace: u64,

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

    /// Where client events go (serverless upstream): a URL template for every hub, category
    /// and event, with `{hub}`, `{category}` and `{event}` replaced. Repeatable; tried after the
    /// --upstream-config templates, first match wins. The environment variable takes several,
    /// separated by spaces.
    #[arg(
        long = "upstream",
        env = "SWITCHBOARD_UPSTREAM",
        value_name = "URL_TEMPLATE",
        value_delimiter = ' '
    )]
    pub upstreams: Vec<String>,

    /// Upstream templates in Azure's JSON shape:
    /// {"templates":[{"urlTemplate","hubPattern","categoryPattern","eventPattern"}]}.
    #[arg(long, env = "SWITCHBOARD_UPSTREAM_CONFIG", value_name = "FILE")]
    pub upstream_config: Option<PathBuf>,

    /// Seconds an upstream call may take, waiting for a connection and reading the answer
    /// included; an invocation then completes with a "timed out" error.
    #[arg(long, env = "SWITCHBOARD_UPSTREAM_TIMEOUT", default_value_t = 30)]
    pub upstream_timeout: u64,

    /// Browser origins allowed to call this gateway (CORS), comma-separated: `*` (every origin,
    /// the default, like Azure), or origins such as https://app.example.com:8443. Other origins
    /// get no CORS headers.
    #[arg(
        long = "cors-allowed-origins",
        env = "SWITCHBOARD_CORS_ALLOWED_ORIGINS",
        value_delimiter = ',',
        default_value = "*"
    )]
    pub cors_allowed_origins: Vec<String>,

    /// Serve the admin page at /admin/ (live counts, connections, users and groups, the store's
    /// state, a live trace). It answers only tokens signed with an access key for /admin/
    /// (`switchboard token --admin`).
    #[arg(long, env = "SWITCHBOARD_ADMIN", value_parser = clap::builder::BoolishValueParser::new())]
    pub admin: bool,

    /// Stateful reconnect (clients with `withStatefulReconnect()`): seconds a connection whose
    /// WebSocket dropped stays open for its client to come back; 0 turns stateful reconnect off.
    #[arg(
        long,
        env = "SWITCHBOARD_STATEFUL_RECONNECT_WINDOW",
        default_value_t = 15
    )]
    pub stateful_reconnect_window: u64,

    /// Stateful reconnect: bytes of unacknowledged messages kept per connection for a replay;
    /// beyond, sending waits for the client's acknowledgements.
    #[arg(
        long,
        env = "SWITCHBOARD_STATEFUL_RECONNECT_BUFFER",
        default_value_t = 100_000
    )]
    pub stateful_reconnect_buffer: usize,

    /// Seconds of this gateway's lease in the store: if it stops renewing (crash, partition),
    /// its connections disappear cluster-wide this long after the last renewal.
    #[arg(long, env = "SWITCHBOARD_LEASE", default_value_t = 10)]
    pub lease: u64,
}

/// Settings shared by every process.
#[derive(Args, Debug, Clone)]
pub struct CommonFlags {
    /// Log format.
    #[arg(
        long,
        env = "SWITCHBOARD_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
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

    /// This node's id: a number, or from-hostname (StatefulSet ordinal + 1).
    #[arg(long, env = "SWITCHBOARD_NODE_ID", default_value = "1")]
    pub node_id: NodeIdArg,

    /// gRPC listener for Raft, the store API and fan-out between gateways. Needed in a cluster.
    #[arg(long, env = "SWITCHBOARD_CLUSTER_LISTEN")]
    pub cluster_listen: Option<SocketAddr>,

    /// The cluster address other nodes dial to reach this one (default: this node's --peers
    /// entry, else --cluster-listen).
    #[arg(long, env = "SWITCHBOARD_ADVERTISE")]
    pub advertise: Option<String>,

    /// Every store voter of the cluster, this node included: 1=HOST:PORT,2=HOST:PORT,...
    #[arg(long, env = "SWITCHBOARD_PEERS")]
    pub peers: Option<Peers>,
    /// Join a running cluster through any of its voters (HOST:PORT,...): this node's voter is
    /// added as a learner, catches up, then votes (needs --cluster-listen and the cluster's
    /// --access-key). With --peers, used only when --peers does not list this node.
    #[arg(long, env = "SWITCHBOARD_JOIN")]
    pub join: Option<Voters>,

    /// Take a store snapshot (and compact the log) after this many log entries.
    #[arg(long, env = "SWITCHBOARD_SNAPSHOT_EVERY", default_value_t = 10_000)]
    pub snapshot_every: u64,

    /// Log entries kept behind a snapshot, so a voter that lags a little catches up from the log
    /// instead of a whole snapshot.
    #[arg(long, env = "SWITCHBOARD_SNAPSHOT_KEEP_LOGS", default_value_t = 1_000)]
    pub snapshot_keep_logs: u64,

    #[command(flatten)]
    pub gateway: GatewayFlags,

    #[command(flatten)]
    pub cluster: ClusterFlags,

    #[command(flatten)]
    pub common: CommonFlags,
}

#[derive(Args, Debug, Clone)]
pub struct GatewayArgs {
    /// HTTP listener: client endpoints, REST API, /api/health, /readyz, /metrics.
    #[arg(long, env = "SWITCHBOARD_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// This gateway's id (default: a random id for this process; gateways keep no state).
    #[arg(long, env = "SWITCHBOARD_NODE_ID")]
    pub node_id: Option<NodeIdArg>,

    /// gRPC listener for fan-out from other gateways.
    #[arg(long, env = "SWITCHBOARD_CLUSTER_LISTEN")]
    pub cluster_listen: SocketAddr,

    /// The cluster address other gateways dial (default: --cluster-listen).
    #[arg(long, env = "SWITCHBOARD_ADVERTISE")]
    pub advertise: Option<String>,

    /// The store voters' cluster addresses: HOST:PORT,HOST:PORT,...
    #[arg(
        long,
        env = "SWITCHBOARD_STORE",
        required_unless_present = "redis",
        conflicts_with = "redis"
    )]
    pub store: Option<Voters>,

    /// The Redis engine instead of store voters: redis://[:PASSWORD@]HOST:PORT[/DB],
    /// rediss:// (TLS), redis-cluster://HOST:PORT?node=HOST:PORT..., redis-sentinel://...
    /// (fred's URL forms). Every gateway on one Redis (and --redis-prefix) is one Switchboard.
    #[arg(long, env = "SWITCHBOARD_REDIS")]
    pub redis: Option<String>,

    /// Prefix of the Redis keys (several Switchboards may share one Redis).
    #[arg(long, env = "SWITCHBOARD_REDIS_PREFIX", default_value = "switchboard")]
    pub redis_prefix: String,

    #[command(flatten)]
    pub gateway: GatewayFlags,

    #[command(flatten)]
    pub cluster: ClusterFlags,

    #[command(flatten)]
    pub common: CommonFlags,
}

#[derive(Args, Debug, Clone)]
pub struct StoreArgs {
    /// Optional HTTP listener serving only /api/health, /readyz and /metrics.
    #[arg(long, env = "SWITCHBOARD_LISTEN")]
    pub listen: Option<SocketAddr>,

    /// Where the Raft log and snapshots live.
    #[arg(
        long,
        env = "SWITCHBOARD_DATA_DIR",
        default_value = "./switchboard-data"
    )]
    pub data_dir: PathBuf,

    /// This node's id: a number, or from-hostname (StatefulSet ordinal + 1).
    #[arg(long, env = "SWITCHBOARD_NODE_ID")]
    pub node_id: NodeIdArg,

    /// gRPC listener for Raft and the store API.
    #[arg(long, env = "SWITCHBOARD_CLUSTER_LISTEN")]
    pub cluster_listen: SocketAddr,

    /// The cluster address other nodes dial (default: this node's --peers entry).
    #[arg(long, env = "SWITCHBOARD_ADVERTISE")]
    pub advertise: Option<String>,

    /// Every store voter of the cluster, this node included: 1=HOST:PORT,2=HOST:PORT,... (to form
    /// a cluster, or rejoin it with this node's data dir).
    #[arg(long, env = "SWITCHBOARD_PEERS", required_unless_present = "join")]
    pub peers: Option<Peers>,
    /// Join a running cluster through any of its voters (HOST:PORT,...): this node is added as
    /// a learner, catches up, then votes. With --peers, used only when --peers does not list this
    /// node (a StatefulSet scaled up past the voters it started with).
    #[arg(long, env = "SWITCHBOARD_JOIN")]
    pub join: Option<Voters>,

    /// Take a store snapshot (and compact the log) after this many log entries.
    #[arg(long, env = "SWITCHBOARD_SNAPSHOT_EVERY", default_value_t = 10_000)]
    pub snapshot_every: u64,

    /// Log entries kept behind a snapshot, so a voter that lags a little catches up from the log
    /// instead of a whole snapshot.
    #[arg(long, env = "SWITCHBOARD_SNAPSHOT_KEEP_LOGS", default_value_t = 1_000)]
    pub snapshot_keep_logs: u64,

    #[command(flatten)]
    pub keys: KeyFlags,

    #[command(flatten)]
    pub cluster: ClusterFlags,

    #[command(flatten)]
    pub http: HttpFlags,

    #[command(flatten)]
    pub common: CommonFlags,
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

    /// Mint an admin token (for the admin page at /admin/ of a node started with --admin)
    /// instead of a client token.
    #[arg(long, conflicts_with_all = ["rest", "user", "application", "hub"])]
    pub admin: bool,

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_parse_and_reject() {
        let p: Peers = "1=127.0.0.1:7001, 2=b:7002,3=[::1]:7003".parse().unwrap();
        assert_eq!(p.0.len(), 3);
        assert_eq!(p.0[&3], "[::1]:7003");
        for bad in ["", "1=a", "x=a:1", "0=a:1", "1=a:1,1=b:2", "1a:1"] {
            assert!(bad.parse::<Peers>().is_err(), "{bad}");
        }
    }

    #[test]
    fn voters_parse() {
        assert_eq!("a:1,b:2".parse::<Voters>().unwrap().0, vec!["a:1", "b:2"]);
        assert!("a".parse::<Voters>().is_err());
        assert!("".parse::<Voters>().is_err());
    }

    #[test]
    fn node_ids_from_hostnames() {
        assert_eq!(ordinal_of("switchboard-store-2"), Some(2));
        assert_eq!(ordinal_of("sb-0.sb-headless.ns.svc"), Some(0));
        assert_eq!(ordinal_of("laptop"), None);
        assert_eq!("7".parse::<NodeIdArg>(), Ok(NodeIdArg::Fixed(7)));
        assert!("0".parse::<NodeIdArg>().is_err());
        assert_eq!(
            "from-hostname".parse::<NodeIdArg>(),
            Ok(NodeIdArg::FromHostname)
        );
    }
}
