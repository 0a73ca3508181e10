//! Fuzzes the policy as a user writes it: arbitrary text deserialized as
//! TOML into `PolicySpec` and compiled. A policy that compiles must then
//! decide a few fixed requests by the same rule as the `decide` target.

#![no_main]

use libfuzzer_sys::fuzz_target;
use registry_redirect_core_fuzz::invariants::check_policy_toml;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        check_policy_toml(text);
    }
});
