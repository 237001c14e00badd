//! Generated code for Herald's protobuf package `herald.v1`: the `Ingest` and
//! `Admin` gRPC services and the `DeliveryMessage` that travels through
//! RabbitMQ. This crate owns generated code only; it must not contain logic.
//!
//! Every generated type derives `serde::Serialize` (field names as in the
//! proto file, proto maps as sorted `BTreeMap`s, unset optional fields and
//! messages as `null`), so clients print messages without a hand-written
//! mapping that could miss a field.

#![allow(clippy::all, clippy::pedantic)]

pub mod v1 {
    tonic::include_proto!("herald.v1");

    /// Encoded `FileDescriptorSet` of the Herald protos, for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/herald_descriptor.bin"));
}
