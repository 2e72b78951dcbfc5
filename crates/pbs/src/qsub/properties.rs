//! Property tests of `qsub`'s value parsers and splitters.

use std::fmt;
use std::str::FromStr;

use proptest::prelude::*;

use super::opt_values::{parse_equal_string, parse_priority};
use super::resources::split_resources;
use super::{
    Checkpoint, ExecutionTime, Join, Keep, MailPoints, RemoveFiles, Sandbox, VariableList,
};

fn round_trip<T>(text: &str) -> Result<(), TestCaseError>
where
    T: FromStr + fmt::Display + PartialEq + fmt::Debug,
{
    if let Ok(value) = text.parse::<T>() {
        prop_assert_eq!(value.to_string().parse::<T>().ok(), Some(value));
    }
    Ok(())
}

proptest! {
    #[test]
    fn letter_values_round_trip(text in "[oednabjsw= 0-9c]{0,5}") {
        round_trip::<Join>(&text)?;
        round_trip::<Keep>(&text)?;
        round_trip::<MailPoints>(&text)?;
        round_trip::<RemoveFiles>(&text)?;
        round_trip::<Checkpoint>(&text)?;
    }

    #[test]
    fn dates_round_trip(text in "[0-9]{4,12}(\\.[0-9]{2})?") {
        round_trip::<ExecutionTime>(&text)?;
    }

    #[test]
    fn sandboxes_round_trip(text in "(?i)(home|o_workdir|private|other)") {
        round_trip::<Sandbox>(&text)?;
    }

    #[test]
    fn variable_lists_round_trip(text in "([A-Z]{1,3}(=[a-z0-9,/ ]{0,4})?,){0,4}") {
        round_trip::<VariableList>(&text)?;
    }

    #[test]
    fn value_parsers_never_panic(text in "\\PC{0,24}") {
        let _ = text.parse::<ExecutionTime>();
        let _ = text.parse::<Checkpoint>();
        let _ = text.parse::<VariableList>();
        let _ = text.parse::<MailPoints>();
        let _ = parse_priority(&text);
        let _ = parse_equal_string(&text);
        let _ = split_resources(&text);
    }

    #[test]
    fn w_and_l_splitters_never_panic(text in "[ a-z=,'\"&\\\\]{0,30}") {
        let _ = parse_equal_string(&text);
        let _ = split_resources(&text);
    }
}
