//! Both built-in audit sinks pass the sink conformance suite.

mod memory {
    ferrohsm_audit::sink_conformance_tests!(ferrohsm_audit::conformance::MemoryHarness::new());
}

mod file {
    ferrohsm_audit::sink_conformance_tests!(ferrohsm_audit::conformance::FileHarness::new());
}
