//! libFuzzer entry point; the work is in `fhirstream_fuzz::conformance`, which the
//! regression test in tests/fuzz_regressions.rs replays without cargo-fuzz.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fhirstream_fuzz::conformance(data));
