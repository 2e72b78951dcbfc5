#![no_main]
//! What an interactive job's node and `qsub -I` read from each other: any text gives a value
//! or a refusal, and what is read writes back as it was.

use hpcbox_pbs::interactive::{Hello, Proof, TerminalSettings};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Some(hello) = Hello::parse(text) {
        assert_eq!(Hello::parse(&hello.to_string()), Some(hello));
    }
    if let Some(proof) = Proof::parse(text) {
        assert_eq!(Proof::parse(&proof.to_string()), Some(proof));
    }
    if let Ok(settings) = TerminalSettings::parse(text) {
        assert_eq!(TerminalSettings::parse(&settings.to_string()), Ok(settings));
    }
});
