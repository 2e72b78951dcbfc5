#![no_main]
//! Job scripts: any text gives directives or an error naming the line, never a panic.

use hpcbox_pbs::script::{directives, DirectivePrefix};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = directives(text, &DirectivePrefix::default());
});
