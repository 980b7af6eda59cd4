//! The public HTTP edge.
pub mod head;
