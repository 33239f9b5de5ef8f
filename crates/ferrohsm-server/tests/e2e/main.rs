//! End-to-end tests of the REST server: a real server on 127.0.0.1 with real TLS, a filesystem
//! store and a durable audit log, driven by reqwest.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod harness;

mod auth;
mod availability;
mod client;
mod dual_control;
mod ocsp;
mod ops;
mod pkcs11;
mod reload;
mod roles;
mod routes;
mod trust;
mod ui;
