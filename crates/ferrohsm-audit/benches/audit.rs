//! Audit throughput (SPEC §10): durable appends per second at 1, 8 and 64 concurrent writers
//! on the file sink, and verification in records per second.
fn main() {}
