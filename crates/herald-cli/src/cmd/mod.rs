//! One module per command group, as mini-redis's `src/cmd/`: each holds the
//! group's clap arguments and the code that runs it.
//!
//! - [`webhooks`]: `herald webhooks ...` (Admin's webhook calls).
//! - [`events`]: `herald events` (`Ingest.ListEvents`).
//! - [`fire`]: `herald fire` (`Ingest.Fire`).
//! - [`delivery_log`]: `herald delivery`, `deliveries`, `summary`, `resend`,
//!   `replay`, `test-send` (Admin's delivery log).
//! - [`api_keys`]: `herald keys ...` (Admin's API key calls).
//! - [`dead_letters`]: `herald dead-letters`, the one command that reads
//!   RabbitMQ instead of the API (see its header for why).
//! - [`receive`]: `herald receive`, a demo webhook target that needs no
//!   server.
//!
//! A command module must never build its own connection or print JSON by
//! hand: it goes through [`crate::client`] and [`crate::output`], so every
//! command authenticates, reports errors and prints the same way.

pub mod api_keys;
pub mod dead_letters;
pub mod delivery_log;
pub mod events;
pub mod fire;
pub mod receive;
pub mod webhooks;
