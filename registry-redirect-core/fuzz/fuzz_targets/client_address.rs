//! Fuzzes `resolve_client` with arbitrary peers and header sets
//! (`Forwarded`, `X-Forwarded-For`, `X-Real-IP`, repeated, not UTF-8),
//! under each forwarding header a policy can read.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use registry_redirect_core_fuzz::invariants::check_client_address;
use registry_redirect_core_fuzz::ClientInput;

/// Returns the trusted proxies: 10.0.0.0/8, fd00::/8 and 192.0.2.0/29.
fn trusted_networks() -> &'static [ipnet::IpNet] {
    static NETWORKS: OnceLock<Vec<ipnet::IpNet>> = OnceLock::new();
    NETWORKS.get_or_init(|| {
        ["10.0.0.0/8", "fd00::/8", "192.0.2.0/29"]
            .iter()
            .filter_map(|text| text.parse().ok())
            .collect()
    })
}

fuzz_target!(|input: ClientInput| {
    check_client_address(&input, trusted_networks());
});
