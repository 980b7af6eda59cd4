//! Authentication for Switchboard: connection strings, access tokens, audiences and connection
//! tickets, exactly as Azure SignalR clients and SDKs expect them.
//!
//! Every REST call and every client connection the gateway accepts goes through this crate, and
//! `switchboard token` mints its tokens here. It is pure: no I/O and no clock (every function that
//! needs the time takes `now_secs`, unix seconds), so it is cheap to test exhaustively.
//!
//! Layout:
//! - [`connection_string`]: the `Endpoint=...;AccessKey=...;Version=1.0;` format, parsed and
//!   printed the way the service SDK does.
//! - [`jwt`]: HS256/HS512 compact JWTs signed with the UTF-8 bytes of an access key; a
//!   [`KeySet`] verifies against every configured key (the SDK's `kid` cannot be trusted).
//! - [`audience`]: the lenient-but-safe `aud` rules ([`Audience`], [`check_audience`]) and user-id
//!   resolution ([`user_id`]).
//! - [`mint`]: client and REST access tokens shaped like the SDK's.
//! - [`ticket`]: the signed, short-lived connection token returned by negotiate, which lets any
//!   gateway accept a connection without shared state.
//!
//! Typical gateway use, with errors ([`AuthError`]) that are safe to show to API callers (they
//! never contain key material):
//!
//! ```
//! use switchboard_auth::{check_audience, mint_rest_token, user_id, Audience, ConnectionString, KeySet};
//!
//! let cs: ConnectionString = "Endpoint=http://localhost;Port=8888;AccessKey=secret;Version=1.0;"
//!     .parse()?;
//! let now = 1_700_000_000;
//! let url = format!("{}/api/v1/hubs/chat/users/u1", cs.base_url());
//! let token = mint_rest_token("secret", &url, Some("server-1"), now, 3600);
//!
//! let keys = KeySet::new(vec!["secret".to_string(), "old-secret".to_string()])?;
//! let claims = keys.verify(&token, now)?;
//! check_audience(&claims, &Audience::Rest { path: "/api/v1/hubs/chat/users/u1", application: None })?;
//! assert_eq!(user_id(&claims).as_deref(), Some("server-1"));
//! assert!(check_audience(&claims, &Audience::Client { hub: "chat" }).is_err());
//! # Ok::<(), switchboard_auth::AuthError>(())
//! ```

pub mod audience;
pub mod cluster;
pub mod connection_string;
mod error;
pub mod jwt;
pub mod mint;
pub mod ticket;
mod uri;
mod v0;

pub use audience::{check_audience, claim_str, user_id, Audience};
pub use cluster::{ClusterAuthError, ClusterIdentity, ClusterKeys};
pub use connection_string::ConnectionString;
pub use error::AuthError;
pub use jwt::{generate_access_key, sign, Algorithm, Claims, KeySet, LEEWAY_SECS, MAX_TOKEN_LEN};
pub use mint::{client_audience, mint_client_token, mint_rest_token};
pub use ticket::{ConnectionTicket, TICKET_LEEWAY_SECS};
pub use v0::is_v0_connection_id;
