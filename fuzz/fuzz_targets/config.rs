//! Issue 12, "the API and config parsers fuzzed": arbitrary bytes as the
//! agent's configuration file. `Config::parse` must never panic; a config it
//! accepts carries a desired state that `rules::check` either accepts or
//! refuses with a `Refusal` naming its rule (never a panic).
#![no_main]

use havip_agent::daemon::config::Config;
use havip_model::rules;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(config) = Config::parse(text) else { return };
    // The config's own check (check_alone) passed; the full check may still
    // refuse (references to objects only the store would hold): a Refusal
    // with a rule name, never a panic.
    if let Err(refusal) = rules::check(&config.desired, &config.limits) {
        assert!(!refusal.rule.name().is_empty());
    }
});
