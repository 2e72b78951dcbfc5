#![no_main]
//! qsub command lines: any argv gives options or a qsub error, never a panic.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|argv: Vec<String>| {
    let _ = hpcbox_pbs::qsub::parse_args(&argv);
});
