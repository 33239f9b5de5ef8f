//! The PostgreSQL backend passes the key store, approval, two-handle and audit sink suites,
//! against a real server started for this test process.

mod keys {
    ferrohsm_store::conformance_tests!(ferrohsm_postgres::conformance::PostgresHarness::new());
}

mod audit {
    ferrohsm_audit::sink_conformance_tests!(ferrohsm_postgres::conformance::PostgresHarness::new());
}
