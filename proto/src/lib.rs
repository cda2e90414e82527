//! Levee's wire protocol, `levee.v1` (see `levee/v1/levee.proto`): the
//! agent→collector stream with acknowledgements, and the SOC API.

pub mod client;

/// Generated messages and services.
#[allow(clippy::large_enum_variant)] // generated: prost's oneofs hold messages inline
pub mod v1 {
    tonic::include_proto!("levee.v1");
}

/// The encoded `FileDescriptorSet`, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/levee_descriptor.bin"));
