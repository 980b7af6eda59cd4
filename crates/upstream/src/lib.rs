//! The serverless upstream: how a client's events reach the app, and how the app answers.
//!
//! In Azure SignalR's serverless mode the service has no hub code of its own. When a client
//! connects, disconnects or invokes a hub method, the service POSTs the event to the app's HTTP
//! endpoint (an Azure Functions app or any web server), signed with the access keys, and relays
//! the answer to an invocation back to the client as its completion. Apps written against Azure
//! must work unchanged, so everything here follows Azure's wire contract exactly: the template
//! settings, the `X-ASRS-*` headers, the signature, the bodies and the meaning of each answer.
//!
//! The core is pure — no sockets, no clock, no HTTP library types — so every rule is tested
//! exhaustively; only [`client`] does I/O:
//! - [`settings`]: the templates (`urlTemplate` with `{hub}`, `{category}`, `{event}`, and the
//!   three patterns), read from Azure's JSON shape or from `--upstream` flags; first match wins.
//! - [`request`]: what is sent for one event of one connection: URL, headers (computed once per
//!   connection, signature included), content type and body.
//! - [`answer`]: what an answer (or its absence) means for the client: a completion forwarded
//!   as is, an empty completion, or an error completion whose text says what went wrong.
//! - [`client`]: one pooled HTTP/1.1 client per process, with bounded connections per upstream
//!   host, a bound on calls in flight, timeouts, no retries (at most once, like Azure).

pub mod answer;
pub mod client;
pub mod request;
pub mod settings;

pub use answer::{interpret, Failure, MAX_ANSWER_BYTES};
pub use client::{Client, ClientConfig, ClientError, InFlight, Response};
pub use request::{Category, Connection, Event, Request};
pub use settings::{ConfigError, Pattern, Settings, Template, UrlTemplate};
