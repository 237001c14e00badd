//! Herald's domain: webhook configuration and its validation, the payload a
//! shop fires and how it is placed into an HTTP request, the retry schedule
//! and the retry decision, and the delivery states that dashboards read.
//!
//! This crate owns pure logic only. It must not do I/O (no network, no
//! database, no clock other than values passed in), so every rule here can be
//! tested directly and reused by ingest, sender and store alike.

pub mod api_key;
pub mod backoff;
pub mod breaker;
pub mod delivery;
pub mod filter;
pub mod idempotency;
pub mod name;
pub mod operational;
pub mod ordering;
pub mod payload;
pub mod rate_limit;
pub mod retry;
pub mod retry_after;
pub mod schedule;
pub mod secret;
pub mod shard;
pub mod signing;
pub mod ssrf;
pub mod subscription;
pub mod template;
pub mod webhook;

pub use delivery::{AttemptError, DeliveryState, ErrorKind};
pub use name::{EventName, Tenant};
pub use payload::{Payload, PayloadError};
pub use rate_limit::RateLimit;
pub use schedule::{RetryDecision, Schedule, ScheduleError};
pub use secret::Secret;
pub use ssrf::{AddressKind, AddressPolicy, Refusal};
pub use template::{CompiledTemplate, EventInfo, TemplateContext, TemplateEngine, TemplateError};
pub use webhook::{
    DEFAULT_TIMEOUT_MS, Method, NewWebhook, NewWebhookInput, ValidationError, Webhook,
    WebhookPatch, WebhookPatchInput,
};
