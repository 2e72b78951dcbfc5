#![no_main]
//! Hostfiles and PBS node files: any text gives hosts or an error, and any placement of any
//! rank count over them gives one host per rank, from the file, or an error.

use hpcbox_comm::placement::{parse_hostfile, parse_nodefile, place};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (&str, u8, u8)| {
    let (text, np, ppn) = input;
    let mut parsed = vec![parse_nodefile(text)];
    if let Ok(hosts) = parse_hostfile(text) {
        parsed.push(hosts);
    }
    for hosts in parsed {
        let ppn = (ppn > 0).then_some(usize::from(ppn % 8));
        if let Ok(placement) = place(usize::from(np), &hosts, ppn) {
            assert_eq!(placement.hosts.len(), usize::from(np));
            assert!(placement.hosts.iter().all(|h| hosts.iter().any(|s| &s.host == h)));
        }
    }
});
