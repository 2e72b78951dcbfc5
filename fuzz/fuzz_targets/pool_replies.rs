#![no_main]
//! What a pool's worker process writes back: any byte stream, cut anywhere, ends each job the
//! worker held once and in order, with no reservation sized by a refused length; any reply
//! body gives each item of its chunk a value or an error naming that item.

use hpcbox_pool::process::{reply_results, settle_reply_stream};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (u8, u16, u32, &[u8])| {
    let (jobs, cut, first, bytes) = input;
    let (jobs, first) = (usize::from(jobs % 24), first as usize);
    let ends = settle_reply_stream(bytes, usize::from(cut), jobs);
    assert!(ends.iter().map(|e| e.0).eq(0..jobs));

    let len = jobs % 9;
    check(reply_results::<u32>(bytes, first, len), first, len);
    check(reply_results::<String>(bytes, first, len), first, len);
    check(reply_results::<(i64, Vec<u8>)>(bytes, first, len), first, len);
});

fn check<R>(results: Vec<Result<R, hpcbox_pool::PoolError>>, first: usize, len: usize) {
    assert_eq!(results.len(), len);
    for (k, r) in results.iter().enumerate() {
        if let Err(e) = r {
            assert_eq!(e.index(), Some(first + k));
        }
    }
}
