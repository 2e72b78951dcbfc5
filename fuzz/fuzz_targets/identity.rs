#![no_main]
//! Job ids, array ranges, destinations and states: any text gives a value or an error.

use hpcbox_pbs::{array::ArrayRange, destination::Destination, jobid::JobId, state::JobState};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(id) = text.parse::<JobId>() {
        assert_eq!(id.to_string().parse::<JobId>().unwrap(), id);
    }
    if let Ok(range) = text.parse::<ArrayRange>() {
        assert_eq!(range.to_string().parse::<ArrayRange>().unwrap(), range);
    }
    let _ = text.parse::<Destination>();
    let _ = text.parse::<JobState>();
});
