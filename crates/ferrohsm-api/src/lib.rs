//! FerroHSM's REST API contract (SPEC §6): the types the server answers with and every client
//! (the CLI, the Rust client, and through the OpenAPI document the Go and Python SDKs) reads.
//!
//! Compatibility rules: request types refuse unknown fields (a typo is an error, never a
//! silently ignored option); response types accept unknown fields, and [`ErrorCode`] accepts
//! codes it does not know as [`ErrorCode::Unknown`], so an older client keeps working against
//! a newer server.
//!
//! This crate must never depend on another FerroHSM crate (clients link it alone), and never
//! decide policy or behaviour: it only describes what travels on the wire.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod error;

pub use error::{Error, ErrorBody, ErrorCode, ErrorDetail};
