//! Property tests of job identity values: ids, array ranges, states and destinations.

use hpcbox_pbs::array::ArrayRange;
use hpcbox_pbs::destination::Destination;
use hpcbox_pbs::jobid::{ArrayPart, JobId};
use hpcbox_pbs::state::JobState;
use proptest::prelude::*;

fn array_range() -> impl Strategy<Value = ArrayRange> {
    (
        0u32..1_000_000,
        1u32..1_000_000,
        1u32..1000,
        proptest::option::of(1u32..10_000),
    )
        .prop_map(|(start, span, step, max_running)| ArrayRange {
            start,
            end: start + span,
            step,
            max_running,
        })
}

fn server_name() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9-]{0,10}(\\.[a-z0-9-]{1,8}){0,3}"
}

fn job_id() -> impl Strategy<Value = JobId> {
    let array = prop_oneof![
        Just(ArrayPart::NotArray),
        Just(ArrayPart::Whole),
        (0u32..100_000).prop_map(ArrayPart::Index),
        array_range().prop_map(|r| ArrayPart::Range(ArrayRange {
            max_running: None,
            ..r
        })),
    ];
    (
        0u64..999_999_999_999,
        array,
        proptest::option::of(server_name()),
    )
        .prop_map(|(seq, array, server)| JobId { seq, array, server })
}

proptest! {
    #[test]
    fn array_range_round_trips(range in array_range()) {
        prop_assert_eq!(range.to_string().parse::<ArrayRange>().unwrap(), range);
        prop_assert_eq!(range.indices().count(), range.len());
    }

    #[test]
    fn job_id_round_trips(id in job_id()) {
        prop_assert_eq!(id.to_string().parse::<JobId>().unwrap(), id);
    }

    #[test]
    fn destination_round_trips(queue in proptest::option::of("[A-Za-z][A-Za-z0-9_]{0,14}"),
                               server in proptest::option::of(server_name())) {
        let dest = Destination { queue, server };
        prop_assert_eq!(dest.to_string().parse::<Destination>().unwrap(), dest);
    }

    #[test]
    fn state_round_trips(index in 0usize..JobState::ALL.len()) {
        let state = JobState::ALL[index];
        prop_assert_eq!(state.to_string().parse::<JobState>().unwrap(), state);
    }

    #[test]
    fn parsers_never_panic(text in "\\PC{0,40}", pbsish in "[0-9a-z\\[\\]\\-:%.@#]{0,30}") {
        for input in [&text, &pbsish] {
            let _ = input.parse::<JobId>();
            let _ = input.parse::<ArrayRange>();
            let _ = input.parse::<Destination>();
            let _ = input.parse::<JobState>();
        }
    }

    #[test]
    fn errors_name_the_token(text in "[0-9a-z\\[\\]\\-:%.]{0,20}") {
        if let Err(err) = text.parse::<JobId>() {
            prop_assert_eq!(err.token, text);
        }
    }
}
