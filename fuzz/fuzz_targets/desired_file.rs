//! Issue 12, "the API and config parsers fuzzed": arbitrary TOML as the
//! declarative file (`havipctl apply -f`, `POST /v1/apply`), through the same
//! steps the agent takes: `toml` → `DesiredFile::parse(host)` → `ops::apply`
//! into the current state (empty, or a small seeded VPC: the first byte
//! chooses) → `rules::check`. None of it may panic, and whatever is accepted
//! round-trips: `DesiredFile::from` (`havipctl export`) written as TOML, read
//! back and applied to an empty state gives exactly the accepted state.
#![no_main]

use havip_model::{ops, rules, DesiredFile, DesiredState, Limits};
use libfuzzer_sys::fuzz_target;

const HOST: &str = "hv1";

/// The state a file is applied to when the first byte is odd: one subnet, three
/// vNICs, a HAVIP with two members and an EIP.
const SEED: &str = r#"
[[subnets]]
name = "vpc1"
cidr = "198.18.1.0/24"
[[vnics]]
name = "vnic-a"
instance = "vm-a"
subnet = "vpc1"
ip = "198.18.1.11"
mac = "02:00:c6:12:01:0b"
[[vnics]]
name = "vnic-b"
host = "hv2"
ifname = "tap-b"
instance = "vm-b"
subnet = "vpc1"
ip = "198.18.1.12"
mac = "02:00:c6:12:01:0c"
[[vnics]]
name = "vnic-c"
instance = "vm-c"
subnet = "vpc1"
ip = "198.18.1.13"
mac = "02:00:c6:12:01:0d"
[[havips]]
vip = "198.18.1.50"
subnet = "vpc1"
members = ["vnic-a", "vnic-b"]
eip = "203.0.113.10"
split_brain = "vrrp-priority"
"#;

fn seeded() -> DesiredState {
    let file: DesiredFile = toml::from_str(SEED).expect("the seed file reads");
    let mut s = DesiredState::default();
    ops::apply(&mut s, file.parse(HOST).expect("the seed file parses"));
    rules::check(&s, &Limits::default()).expect("the seed state keeps the rules");
    s
}

fuzz_target!(|data: &[u8]| {
    let Some((&choice, rest)) = data.split_first() else { return };
    let Ok(text) = std::str::from_utf8(rest) else { return };
    let Ok(file) = toml::from_str::<DesiredFile>(text) else { return };
    let Ok(parsed) = file.parse(HOST) else { return };
    let mut state = if choice & 1 == 1 { seeded() } else { DesiredState::default() };
    ops::apply(&mut state, parsed);
    let limits = Limits::default();
    if rules::check(&state, &limits).is_err() {
        return; // refused: a Refusal, nothing else to hold
    }
    // Accepted: export, write, read back, apply to nothing: the same state.
    let exported = DesiredFile::from(&state);
    let written = toml::to_string(&exported).expect("an exported file writes as TOML");
    let read: DesiredFile =
        toml::from_str(&written).unwrap_or_else(|e| panic!("an exported file reads back: {e}\n{written}"));
    let reparsed = read.parse(HOST).unwrap_or_else(|e| panic!("an exported file parses: {e}\n{written}"));
    let mut again = DesiredState::default();
    ops::apply(&mut again, reparsed);
    assert_eq!(again, state, "export then apply changes the state\n{written}");
    rules::check(&again, &limits).expect("the round-tripped state keeps the rules");
    // And applying the export onto the accepted state changes nothing.
    let mut onto = state.clone();
    ops::apply(&mut onto, read.parse(HOST).unwrap());
    assert_eq!(onto, state, "re-applying the export changes the state");
});
