//! The crate's error type.

/// What can go wrong in this crate: reading and writing CSV for the offline detector, and
/// checkpoints.
#[derive(Debug, thiserror::Error)]
pub enum AnalyticsError {
    /// The CSV input had no header line.
    #[error("the CSV input is empty: expected a header line `timestamp,value`")]
    EmptyCsv,
    /// The header lacks a needed column.
    #[error(
        "line 1: the CSV header {header:?} has no `{column}` column (expected `timestamp,value`)"
    )]
    CsvHeader {
        /// The header as read.
        header: String,
        /// The missing column.
        column: &'static str,
    },
    /// A data row is malformed.
    #[error("line {line}: {reason}")]
    CsvRow {
        /// 1-based line number in the input (the header is line 1).
        line: usize,
        /// What is wrong, with the offending text.
        reason: String,
    },
    /// Reading the input failed.
    #[error("reading the CSV input at line {line}: {source}")]
    Read {
        /// The line being read.
        line: usize,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Writing the output failed.
    #[error("writing the CSV output: {0}")]
    Write(#[source] std::io::Error),
    /// A checkpoint could not be written.
    #[error("encoding the analytics checkpoint: {0}")]
    CheckpointEncode(#[from] rmp_serde::encode::Error),
    /// A checkpoint could not be read.
    #[error("decoding the analytics checkpoint: {0}")]
    CheckpointDecode(#[from] rmp_serde::decode::Error),
}
