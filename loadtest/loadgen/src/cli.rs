//! Command-line options of `switchboard-loadgen`: which server, how many connections at what
//! pace, what to send and how fast. One struct, so a worker process re-executed by
//! `--processes` gets exactly the options of its parent.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::frames::Protocol;

/// Connections one process holds at most: a process here may have 20,000 open files, and the
/// generator needs a few for itself and its HTTP clients.
pub const MAX_CONNECTIONS_PER_PROCESS: usize = 19_000;

/// Drive a SignalR (or Socket.IO) server with many WebSocket clients and REST senders, and
/// report deliveries/s, end-to-end latency, connect rate, errors and server memory.
#[derive(Debug, Parser)]
#[command(
    name = "switchboard-loadgen",
    version,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print a comparison table (Markdown) of the JSON lines in a results file.
    Compare {
        /// A file of JSON lines written by `--json` runs.
        results: PathBuf,
    },
    /// Client invocations through Switchboard to a serverless upstream, against the same calls
    /// sent straight to the upstream (run `upstream-server` and point Switchboard's
    /// `--upstream` at it).
    Invoke(InvokeArgs),
}

/// A phase of `invoke`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Phase {
    /// POST the invocations straight to the upstream.
    Direct,
    /// Invoke through Switchboard over client WebSockets.
    Switchboard,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Direct => "direct",
            Phase::Switchboard => "switchboard",
        }
    }
}

/// The options of `invoke`.
#[derive(Debug, Clone, Args)]
pub struct InvokeArgs {
    /// Switchboard's connection string (Endpoint, AccessKey, Port).
    #[arg(long, env = "SWITCHBOARD_CONNECTION_STRING", hide_env_values = true)]
    pub connection_string: Option<String>,

    /// Switchboard's URL, when no connection string is given (with --access-key).
    #[arg(long)]
    pub url: Option<String>,

    /// Switchboard's access key, when no connection string is given.
    #[arg(long, env = "SWITCHBOARD_ACCESS_KEY", hide_env_values = true)]
    pub access_key: Option<String>,

    /// The hub.
    #[arg(long, default_value = "loadgen")]
    pub hub: String,

    /// The upstream's URL, for the direct phase (the same server Switchboard's --upstream names).
    #[arg(long)]
    pub upstream: String,

    /// Lanes: client connections (switchboard) or concurrent callers (direct), each one call at
    /// a time.
    #[arg(long, default_value_t = 100)]
    pub connections: usize,

    /// Calls per second over all lanes; omitted: every lane calls again as soon as it is
    /// answered (the maximum rate).
    #[arg(long)]
    pub rate: Option<f64>,

    /// Seconds of calling per phase.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,

    /// The phases, in order.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "direct,switchboard"
    )]
    pub phases: Vec<Phase>,

    /// Switchboard's process id: its CPU time per phase is reported.
    #[arg(long)]
    pub server_pid: Option<u32>,

    /// Print one JSON line on stdout (the table goes to stderr).
    #[arg(long)]
    pub json: bool,

    /// A name for this run in the report.
    #[arg(long, default_value = "")]
    pub label: String,
}

impl InvokeArgs {
    pub fn validate(&self) -> Result<(), String> {
        if self.connections == 0 || self.connections > MAX_CONNECTIONS_PER_PROCESS {
            return Err(format!(
                "--connections must be 1..={MAX_CONNECTIONS_PER_PROCESS}"
            ));
        }
        if let Some(rate) = self.rate {
            if !(rate > 0.0 && rate.is_finite()) {
                return Err("--rate must be a positive number".into());
            }
        }
        if !(self.duration > 0.0 && self.duration.is_finite()) {
            return Err("--duration must be a positive number".into());
        }
        if self.phases.contains(&Phase::Switchboard)
            && self.connection_string.is_none()
            && (self.url.is_none() || self.access_key.is_none())
        {
            return Err(
                "the switchboard phase needs --connection-string (or --url with --access-key)"
                    .into(),
            );
        }
        Ok(())
    }

    /// Switchboard's URL and key.
    pub fn server(&self) -> Result<(String, Option<String>), crate::Error> {
        let cs = match &self.connection_string {
            Some(cs) => Some(
                cs.parse::<switchboard_auth::ConnectionString>()
                    .map_err(|e| crate::Error::Config(format!("--connection-string: {e}")))?,
            ),
            None => None,
        };
        let url = match (&self.url, &cs) {
            (Some(url), _) => url.clone(),
            (None, Some(cs)) => cs.base_url(),
            (None, None) => return Err(crate::Error::Config("--url is required".into())),
        };
        let key = self
            .access_key
            .clone()
            .or_else(|| cs.and_then(|cs| cs.access_key));
        Ok((url, key))
    }
}

/// The server under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// Switchboard: negotiate with a client token, REST sends with REST tokens.
    Switchboard,
    /// `baseline-server`: the same SignalR frames, no auth, `POST /broadcast`.
    Baseline,
    /// A Socket.IO 4 server (`loadtest/socketio`): engine.io v4 over WebSocket, `POST /broadcast`.
    Socketio,
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::Switchboard => "switchboard",
            Target::Baseline => "baseline",
            Target::Socketio => "socketio",
        }
    }
}

/// What the senders address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// Connect, hold the connections, send nothing (memory, connect rate).
    Idle,
    /// Broadcast to the hub: every connection gets every message.
    Broadcast,
    /// Send to user `user{seq % users}`; connection i belongs to `user{i % users}`.
    User,
    /// Send to group `group{seq % groups}`; connection i joins `group{i % groups}`.
    Group,
    /// Send to one connection, round robin over the open connections.
    Connection,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Idle => "idle",
            Scenario::Broadcast => "broadcast",
            Scenario::User => "user",
            Scenario::Group => "group",
            Scenario::Connection => "connection",
        }
    }
}

/// How the clients connect (`--transport`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// One WebSocket per client.
    Websockets,
    /// Server-Sent Events: a streaming GET per client, sends POSTed over a shared pool.
    Sse,
    /// Long Polling: one keep-alive HTTP/1.1 connection per client, poll after poll.
    Longpolling,
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Transport::Websockets => "websockets",
            Transport::Sse => "sse",
            Transport::Longpolling => "longpolling",
        }
    }
}

/// `--protocol` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProtocolArg {
    Json,
    Messagepack,
}

impl From<ProtocolArg> for Protocol {
    fn from(p: ProtocolArg) -> Protocol {
        match p {
            ProtocolArg::Json => Protocol::Json,
            ProtocolArg::Messagepack => Protocol::Messagepack,
        }
    }
}

/// The options of one run.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// The server under test.
    #[arg(long, value_enum, default_value = "switchboard")]
    pub target: Target,

    /// The server's base URL (Switchboard: taken from the connection string when not given).
    #[arg(long)]
    pub url: Option<String>,

    /// Send REST calls to this server instead of `--url` (another gateway of the same cluster:
    /// measures delivery across gateways).
    #[arg(long)]
    pub rest_url: Option<String>,

    /// Switchboard's connection string (Endpoint, AccessKey, Port).
    #[arg(long, env = "SWITCHBOARD_CONNECTION_STRING", hide_env_values = true)]
    pub connection_string: Option<String>,

    /// Switchboard's access key, when no connection string is given.
    #[arg(long, env = "SWITCHBOARD_ACCESS_KEY", hide_env_values = true)]
    pub access_key: Option<String>,

    /// The hub (Switchboard and the baseline).
    #[arg(long, default_value = "loadgen")]
    pub hub: String,

    /// Client connections to open (spread over `--processes`).
    #[arg(long, default_value_t = 100)]
    pub connections: usize,

    /// Connections opened per second, over all processes; 0 = as fast as
    /// `--connect-concurrency` allows.
    #[arg(long, default_value_t = 1000.0)]
    pub connect_rate: f64,

    /// Connection attempts in flight at once, per process.
    #[arg(long, default_value_t = 256)]
    pub connect_concurrency: usize,

    /// How the clients connect: WebSockets, Server-Sent Events or Long Polling (the last two
    /// only to Switchboard, with the JSON protocol).
    #[arg(long, value_enum, default_value = "websockets")]
    pub transport: Transport,

    /// The hub protocol of the SignalR clients.
    #[arg(long, value_enum, default_value = "json")]
    pub protocol: ProtocolArg,

    /// What the REST senders address.
    #[arg(long, value_enum, default_value = "broadcast")]
    pub scenario: Scenario,

    /// REST sends per second for `--duration` seconds.
    #[arg(long, conflicts_with = "burst")]
    pub rate: Option<f64>,

    /// K back-to-back sends, as fast as `--send-concurrency` allows (instead of `--rate`).
    #[arg(long)]
    pub burst: Option<u64>,

    /// REST requests in flight at once.
    #[arg(long, default_value_t = 32)]
    pub send_concurrency: usize,

    /// Bytes of padding in every message.
    #[arg(long, default_value_t = 32)]
    pub payload_bytes: usize,

    /// Seconds of sending at `--rate` (or of holding the connections for `idle`).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,

    /// After the last send, wait at most this many seconds without a new delivery.
    #[arg(long, default_value_t = 5.0)]
    pub drain: f64,

    /// Seconds to wait after the last connection opened before reading the server's memory.
    #[arg(long, default_value_t = 2.0)]
    pub settle: f64,

    /// Users for `--scenario user` (default: one per connection).
    #[arg(long)]
    pub users: Option<usize>,

    /// Groups for `--scenario group` (default: connections / 10).
    #[arg(long)]
    pub groups: Option<usize>,

    /// The server's process id: its VmRSS is read before connecting and once the connections
    /// are idle (KiB per connection), and its CPU time over the run.
    #[arg(long)]
    pub server_pid: Option<u32>,

    /// Client processes; more than one re-executes this binary as workers (each holds
    /// connections / P connections; at most 19,000 per process).
    #[arg(long, default_value_t = 1)]
    pub processes: usize,

    /// Print one JSON line on stdout (the table goes to stderr).
    #[arg(long)]
    pub json: bool,

    /// A name for this run in the report (e.g. the bench scenario).
    #[arg(long, default_value = "")]
    pub label: String,

    /// Seconds between client keep-alive pings (the server closes clients silent for longer
    /// than its client timeout); 0: no pings (raise the server's --client-timeout instead).
    #[arg(long, default_value_t = 15.0)]
    pub keep_alive: f64,

    /// Internal: this process is worker K of `--processes`.
    #[arg(long, hide = true)]
    pub worker_index: Option<usize>,
}

impl RunArgs {
    /// Checks what clap cannot: combinations and limits.
    pub fn validate(&self) -> Result<(), String> {
        if self.processes == 0 {
            return Err("--processes must be at least 1".into());
        }
        if self.connections.div_ceil(self.processes) > MAX_CONNECTIONS_PER_PROCESS {
            return Err(format!(
                "{} connections over {} process(es) is more than {MAX_CONNECTIONS_PER_PROCESS} per process: raise --processes",
                self.connections, self.processes
            ));
        }
        if self.connect_concurrency == 0 || self.send_concurrency == 0 {
            return Err("concurrency must be at least 1".into());
        }
        if !(self.connect_rate >= 0.0 && self.connect_rate.is_finite()) {
            return Err("--connect-rate must be a finite number ≥ 0".into());
        }
        for (name, v) in [
            ("--duration", self.duration),
            ("--drain", self.drain),
            ("--settle", self.settle),
        ] {
            if !(v >= 0.0 && v.is_finite()) {
                return Err(format!("{name} must be a finite number ≥ 0"));
            }
        }
        if !(self.keep_alive >= 0.0 && self.keep_alive.is_finite()) {
            return Err("--keep-alive must be a finite number ≥ 0".into());
        }
        if self.transport != Transport::Websockets {
            if self.target != Target::Switchboard {
                return Err(format!(
                    "--transport {} needs --target switchboard",
                    self.transport.name()
                ));
            }
            if Protocol::from(self.protocol) != Protocol::Json {
                return Err(format!(
                    "--transport {} speaks the JSON protocol: leave --protocol json",
                    self.transport.name()
                ));
            }
        }
        if let Some(rate) = self.rate {
            if !(rate > 0.0 && rate.is_finite()) {
                return Err("--rate must be a positive number".into());
            }
        }
        let sends = self.scenario != Scenario::Idle;
        if sends && self.rate.is_none() && self.burst.is_none() {
            return Err(format!(
                "--scenario {} needs --rate or --burst",
                self.scenario.name()
            ));
        }
        if self.target != Target::Switchboard
            && !matches!(self.scenario, Scenario::Idle | Scenario::Broadcast)
        {
            return Err(format!(
                "--target {} serves only the idle and broadcast scenarios",
                self.target.name()
            ));
        }
        if self.target == Target::Socketio && Protocol::from(self.protocol) != Protocol::Json {
            return Err("--target socketio has its own encoding: leave --protocol json".into());
        }
        if self.target == Target::Switchboard
            && self.connection_string.is_none()
            && self.access_key.is_none()
        {
            return Err(
                "--target switchboard needs --connection-string or --access-key (with --url)"
                    .into(),
            );
        }
        if matches!(self.scenario, Scenario::User) && self.users == Some(0)
            || matches!(self.scenario, Scenario::Group) && self.groups == Some(0)
        {
            return Err("--users and --groups must be at least 1".into());
        }
        if let Some(k) = self.worker_index {
            if k >= self.processes {
                return Err("--worker-index must be below --processes".into());
            }
        }
        Ok(())
    }

    /// Users of the user scenario.
    pub fn user_count(&self) -> usize {
        self.users.unwrap_or(self.connections).max(1)
    }

    /// Groups of the group scenario.
    pub fn group_count(&self) -> usize {
        self.groups.unwrap_or(self.connections / 10).max(1)
    }

    /// The connection indices process `k` of `--processes` opens.
    pub fn slice(&self, k: usize) -> std::ops::Range<usize> {
        let p = self.processes.max(1);
        (self.connections * k / p)..(self.connections * (k + 1) / p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(args: &[&str]) -> RunArgs {
        let mut all = vec!["switchboard-loadgen"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).unwrap().run
    }

    #[test]
    fn defaults_and_validation() {
        let args = parse(&[
            "--target",
            "baseline",
            "--url",
            "http://127.0.0.1:1",
            "--burst",
            "5",
        ]);
        assert_eq!(args.connections, 100);
        assert!(args.validate().is_ok());
        let args = parse(&[
            "--target",
            "baseline",
            "--url",
            "http://x",
            "--scenario",
            "user",
            "--rate",
            "1",
        ]);
        assert!(args.validate().unwrap_err().contains("idle and broadcast"));
        let args = parse(&["--target", "baseline", "--url", "http://x"]);
        assert!(args.validate().unwrap_err().contains("--rate or --burst"));
        let args = parse(&[
            "--access-key",
            "k",
            "--scenario",
            "idle",
            "--connections",
            "40000",
        ]);
        assert!(args.validate().unwrap_err().contains("raise --processes"));
        let args = parse(&[
            "--access-key",
            "k",
            "--scenario",
            "idle",
            "--connections",
            "40000",
            "--processes",
            "3",
        ]);
        assert!(args.validate().is_ok());
        assert!(Cli::try_parse_from(["x", "--rate", "1", "--burst", "2"]).is_err());
    }

    #[test]
    fn http_transports_need_switchboard_and_json() {
        let args = parse(&["--access-key", "k", "--scenario", "idle"]);
        assert_eq!(args.transport, Transport::Websockets);
        for transport in ["sse", "longpolling"] {
            let args = parse(&[
                "--access-key",
                "k",
                "--scenario",
                "idle",
                "--transport",
                transport,
                "--keep-alive",
                "0",
            ]);
            assert!(args.validate().is_ok());
            let args = parse(&[
                "--access-key",
                "k",
                "--scenario",
                "idle",
                "--transport",
                transport,
                "--protocol",
                "messagepack",
            ]);
            assert!(args.validate().unwrap_err().contains("JSON"));
            let args = parse(&[
                "--target",
                "baseline",
                "--url",
                "http://x",
                "--scenario",
                "idle",
                "--transport",
                transport,
            ]);
            assert!(args
                .validate()
                .unwrap_err()
                .contains("--target switchboard"));
        }
        let args = parse(&[
            "--access-key",
            "k",
            "--scenario",
            "idle",
            "--keep-alive",
            "inf",
        ]);
        assert!(args.validate().is_err());
    }

    #[test]
    fn compare_is_a_subcommand() {
        let cli = Cli::try_parse_from(["x", "compare", "r.jsonl"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Compare { .. })));
    }

    proptest! {
        #[test]
        fn slices_cover_every_connection_once(n in 0usize..100_000, p in 1usize..16) {
            let args = RunArgs { connections: n, processes: p, ..parse(&[]) };
            let mut next = 0;
            for k in 0..p {
                let s = args.slice(k);
                prop_assert_eq!(s.start, next);
                next = s.end;
            }
            prop_assert_eq!(next, n);
        }
    }
}
