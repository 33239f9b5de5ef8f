//! Both built-in backends pass the conformance suite.

mod memory {
    ferrohsm_store::conformance_tests!(ferrohsm_store::conformance::MemoryHarness::new());
}

mod file {
    ferrohsm_store::conformance_tests!(ferrohsm_store::conformance::FileHarness::new());
}
