//! # trace-core: the model every other crate speaks
//!
//! - [`entry`]: [`TraceEntry`] and its parts ([`EventId`] ULIDs, [`Severity`], [`Category`]).
//! - [`codec`]: the wire codec. [`Decoder::decode`] turns any payload seen on an input subject
//!   into an entry (validated envelope, or the game's own traffic wrapped) or a typed
//!   [`DecodeError`] that says why it must be quarantined; [`encode_entry`] writes the msgpack
//!   envelope that publishers send and blocks store.
//! - [`limits`]: the [`Limits`] every message is checked against before decoding.
//! - [`privacy`]: redaction and keyed pseudonyms applied before anything is stored.
//! - [`subject`]: the subject scheme `game.<kind>.<source>.<type>` and its mapping.
//! - [`human`]: durations, byte sizes and time arguments as people write them.
//! - [`query`]: the [`Query`] a store answers, with its [`Cursor`] and [`QueryPage`].
//! - `bus` (feature `nats`, on by default): connecting, stream and consumer setup, and the
//!   batched pull-consume loop with acks after durability.
//! - `auth` (feature `nats`): `NatsAuth`, NATS credentials (user/password, token, nkey,
//!   credentials file) and TLS (CA, client certificate), validated, never printed.
//! - `client` (feature `nats`): `TraceClient`, the publisher game services use: buffered,
//!   batched, never blocking the game loop, spilling to a local file while NATS is away.
//! - `layer` (feature `nats`): `TraceLayer`, a `tracing_subscriber::Layer` that turns a
//!   service's `tracing` events and spans into entries through a `TraceClient`.
//!
//! Without the `nats` feature this crate does no I/O.
#![deny(missing_docs)]

pub mod codec;
pub mod entry;
pub mod error;
pub mod human;
pub mod limits;
pub mod privacy;
pub mod query;
pub mod subject;

#[cfg(feature = "nats")]
pub mod auth;
#[cfg(feature = "nats")]
pub mod bus;
#[cfg(feature = "nats")]
pub mod client;
#[cfg(feature = "nats")]
pub mod layer;

pub use codec::{decode_stored_entry, encode_entry, encode_entry_vec, Decoder, Incoming};
pub use entry::{Category, EventId, Severity, TraceEntry};
pub use error::{DecodeError, DecodeErrorKind, FieldError, SubjectError};
pub use limits::Limits;
pub use query::{Cursor, Order, Query, QueryPage};
pub use subject::{InputSubject, SourceKind, SubjectInfo, SubjectScheme};
