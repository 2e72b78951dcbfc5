#![no_main]
//! The server's responses as a PBS command reads them: any bytes give a response or an error.

use hpcbox_cluster::client::http1::parse_response;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(response) = parse_response(bytes) {
        assert!(response.body.len() <= bytes.len());
    }
});
