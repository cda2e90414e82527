//! Levee's host agent.
//!
//! Data flows one way, one module per stage:
//! kernel probes ([`probes`]) → decoding ([`events::decode`]) → domain events
//! ([`events`]) → process/session model ([`model`]) → output ([`output`]),
//! driven by [`pipeline`].

pub mod alert;
pub mod escape;
pub mod events;
pub mod health;
pub mod host;
pub mod model;
pub mod output;
pub mod pipeline;
pub mod policy;
pub mod probes;
pub mod response;
pub mod scoring;
pub mod ship;
