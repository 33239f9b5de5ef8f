//! The SQLite backend passes the key store, approval, two-handle and audit sink suites.

mod keys {
    ferrohsm_store::conformance_tests!(ferrohsm_sqlite::conformance::SqliteHarness::new());
}

mod audit {
    ferrohsm_audit::sink_conformance_tests!(ferrohsm_sqlite::conformance::SqliteHarness::new());
}
