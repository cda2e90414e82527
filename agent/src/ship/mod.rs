//! Getting alerts to the collector without losing any: the durable [`spool`],
//! the `levee.v1` form ([`wire`]), and the [`sender`] that streams, collects
//! acks and reconnects.

pub mod sender;
pub mod spool;
pub mod wire;
