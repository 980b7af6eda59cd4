//! Vocabulary shared by every Switchboard crate.
//!
//! Three things live here because more than one crate needs them and none of them owns the
//! concept: the identifiers that cross crate boundaries ([`NodeId`], connection ids), the
//! validation rules for names that arrive from the network ([`names`]), and the single error-code
//! taxonomy ([`ErrorCode`]) that the gateway maps to HTTP status + `ErrorDetail` and the cluster
//! maps to gRPC status. Nothing here does I/O; the one helper that reads the clock
//! ([`throttle::now_ms`]) is for callers of the pure [`Throttle`].

pub mod error;
pub mod ids;
pub mod names;
pub mod throttle;

pub use error::{Error, ErrorCode};
pub use ids::{new_connection_id, node_of_connection_id, NodeId};
pub use throttle::Throttle;
