#![no_main]
//! The server's responses as a PBS command reads them: any bytes give a response or an error,
//! and reading stops at the end of the stream at the latest.

use hpcbox_cluster::client::http1::{parse_response, read_response};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let mut read = Vec::new();
    read_response(&mut &bytes[..], &mut read).expect("a slice reads without error");
    assert!(bytes.starts_with(&read));
    if let Ok(response) = parse_response(&read) {
        assert!(response.body.len() <= read.len());
    }
});
