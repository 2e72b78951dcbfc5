#![no_main]
//! Sizes, durations, select and place statements, nodes= specs and -l lists: any text gives a
//! value or an error naming the token; a value prints back to the same value.

use hpcbox_pbs::{duration::Duration, place::Place, resource::ResourceList, select::Select, size::Size};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(size) = text.parse::<Size>() {
        assert_eq!(size.to_string().parse::<Size>().unwrap(), size);
    }
    if let Ok(duration) = text.parse::<Duration>() {
        assert_eq!(duration.to_string().parse::<Duration>().unwrap(), duration);
    }
    if let Ok(select) = text.parse::<Select>() {
        assert_eq!(select.to_string().parse::<Select>().unwrap(), select);
    }
    if let Ok(place) = text.parse::<Place>() {
        assert_eq!(place.to_string().parse::<Place>().unwrap(), place);
    }
    let _ = hpcbox_pbs::nodes::parse(text);
    let _ = ResourceList::parse_l(text);
});
