//! # trace-store: durable, compressed, indexed storage of trace entries in sled
//!
//! Data flow: [`Store::append`] encodes entries with the wire codec into a pending block; full
//! blocks (and the growing tail block) are zstd-compressed, checksummed and written with their
//! [`BlockSummary`], the quarantined messages and the consumer watermark in one atomic sled
//! batch into the active segment; [`Store::flush`] makes it durable. [`Store::query`] skips
//! blocks by their summaries and merges the rest newest- or oldest-first.
//!
//! - `config`: [`StoreConfig`] and its defaults table.
//! - `block`: block layout, compression, checksums and summaries.
//! - `bloom`: the persisted Bloom filters in summaries.
//! - `segment`: one sled database per time window; sealing and deletion.
//! - `store`: the [`Store`] facade: append, flush, query, get, explain, quarantine, info,
//!   maintain (rotation and retention).
//! - `quarantine`: [`QuarantineRecord`].
//!
//! This crate knows nothing of NATS: the watermark is an opaque `(name, u64)`.
#![deny(missing_docs)]

mod block;
mod bloom;
mod config;
mod error;
mod quarantine;
mod segment;
mod store;

pub use block::BlockSummary;
pub use bloom::Bloom;
pub use config::StoreConfig;
pub use error::{Result, StoreError};
pub use quarantine::QuarantineRecord;
pub use store::{
    AppendBatch, CorruptBlock, MaintainReport, ScanStats, SegmentInfo, Store, StoreInfo,
    VerifyReport, MAX_CHAIN,
};
