//! Serde helpers for durations and sizes written as people write them (`30s`, `512MiB`): the
//! ones in `trace_core::human`, so config files read the same everywhere.

pub(crate) use trace_core::human::bytes_serde as human_bytes;
pub(crate) use trace_core::human::duration_serde as human_duration;
