//! Fuzzes `decide` and `into_response` with arbitrary requests under a
//! fixed policy that has every kind of upstream and rule. See
//! `registry_redirect_core_fuzz::verdict` for what each decision must meet.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use registry_redirect_core_fuzz::invariants::DecideHarness;
use registry_redirect_core_fuzz::{fixture, DecideInput};

fn harness() -> &'static DecideHarness {
    static HARNESS: OnceLock<DecideHarness> = OnceLock::new();
    HARNESS.get_or_init(|| DecideHarness::new(fixture::policy()))
}

fuzz_target!(|input: DecideInput| {
    harness().run(&input);
});
