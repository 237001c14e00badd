//! `herald-bench`: measures this machine's raw limits (AMQP confirmed
//! publish, consume + ack, HTTP keep-alive, batched Postgres insert, tonic
//! unary) and then the Herald pipeline — ingest and senders as real
//! processes, a fast receiver in this process — in the same run, and reports
//! each Herald figure as a ratio to the raw stage that bounds it.
//!
//! Everything runs on loopback, in a database and under a queue prefix of its
//! own that are removed at the end. Not part of `cargo test`.

pub mod baseline;
pub mod console;
pub mod herald;
pub mod otlp_sink;
pub mod procfs;
pub mod protection;
pub mod receiver;
pub mod report;
pub mod runs;
pub mod stats;
