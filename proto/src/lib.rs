//! Protobuf contracts of StackShift (`package stackshift.v1`) and the tonic code generated
//! from them. The `.proto` sources live in `proto/stackshift/v1/`; they are the contract
//! every SDK (native Rust, generated TypeScript, Python and Go) is built on.

/// Generated messages, clients and servers of `stackshift.v1`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("stackshift.v1");
}

/// The encoded `FileDescriptorSet` of `stackshift.v1`, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/stackshift_descriptor.bin"));

pub use prost_types;
