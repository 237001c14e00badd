//! Herald's Postgres side: the connection pool, the schema migrations, the
//! webhook configuration (with a live in-memory cache that follows changes
//! through `LISTEN`/`NOTIFY`) and the `deliveries` / `delivery_attempts` tables
//! that dashboards read.
//!
//! This crate talks to Postgres only. It must not touch RabbitMQ or HTTP: the
//! services decide when something is delivered or acknowledged, and this crate
//! only records configuration and outcomes, so it can be tested against a
//! database alone.
//!
//! The pieces:
//! - [`pool`] and [`migrate`] set up the database at service start.
//! - [`Store`] is the webhook CRUD used by Admin, plus reading a delivery.
//! - [`ConfigCache`] keeps every webhook in memory so that Fire never waits for
//!   Postgres, and keeps serving the last known configuration while Postgres is
//!   down.
//! - The delivery log ([`Store::list_deliveries`], [`Store::webhook_summary`],
//!   [`Store::record_resend`]) answers Admin's log queries.
//! - [`Store::replica_lag`] tells how far a read replica's replay is behind,
//!   for a `Store` built on a replica's pool (the service decides which reads
//!   go there).
//! - [`ApiKeyCache`] holds the active API keys (hashes only) for ingest's
//!   authentication, following `LISTEN`/`NOTIFY` like the configuration.
//! - [`AttemptWriter`] records delivery outcomes in batches (group commit) and
//!   tells each caller when its record is durable.
//! - [`FireKeys`] records Fire idempotency keys with their delivery ids.
//! - [`HealthStore`] keeps each webhook's failure streak and circuit
//!   breaker, shared by every sender.
//! - [`RateBuckets`] holds the token buckets of rate-limited webhooks,
//!   shared by every sender.
//! - [`OrderingStore`] keeps the ordering keys a final failure stopped and
//!   reads a redelivered ordered delivery's progress.
//! - [`retention`] removes old deliveries and clears old payloads in small
//!   batches, and expired idempotency keys.

mod api_keys;
mod cache;
mod delivery_log;
mod health;
pub mod idempotency;
pub mod ordering;
mod rate;
mod replica;
pub mod retention;
mod scheduled;
mod secrets;
mod store;
mod watch;
mod writer;

#[cfg(test)]
mod test_support;

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;
use tracing::{debug, info, warn};
use uuid::Uuid;

pub use api_keys::{ApiKey, ApiKeyCache};
pub use cache::{ConfigCache, ConfigSnapshot};
pub use deadpool_postgres::Pool;
pub use delivery_log::{
    Cursor, DEFAULT_PAGE_SIZE, DeliveryFilter, DeliveryPage, InvalidCursor, MAX_PAGE_SIZE,
    MAX_RESENT_AS, ResendError, ResendKind, ResendRecord, TimelineBucket, WebhookSummaryView,
};
pub use health::{HealthStore, Recorded, Troubled};
pub use herald_core::{DeliveryState, Method, NewWebhook, Webhook, WebhookPatch};
pub use idempotency::{FireDelivery, FireKeyError, FireKeys, FireOutcome, KeyedFire, StoredFire};
pub use ordering::{DeliveryProgress, OrderingStore};
pub use rate::{RateBuckets, Take};
pub use retention::{RetentionPolicy, RetentionReport};
pub use scheduled::{ScheduledLog, ScheduledLogConfig, ScheduledRecord};
pub use secrets::{SecretBox, SecretBoxError};
pub use store::{AttemptView, DELIVERY_COLUMNS, DeliveryView, Store};
pub use writer::{
    AttemptRecord, AttemptWriter, DeliveryRecord, WriteError, WriteRequest, WriterConfig,
};

/// Key of the session-level advisory lock that serialises migrations. It is a
/// fixed, arbitrary number ("herald" in ASCII) so that every Herald service
/// taking part agrees on it without configuration.
const MIGRATION_LOCK_KEY: i64 = 0x6865_7261_6c64;

/// How long to wait for a new Postgres connection before giving up. Without a
/// bound, a host that drops packets would hang a caller for minutes.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// `url` with its database name replaced by `name`, keeping any parameters:
/// how tests, the benchmark and tools address a sibling database on the same
/// server (`postgres://u@h:5432/test` → `postgres://u@h:5432/<name>`).
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let host_part = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{host_part}/{name}?{query}"),
        None => format!("{host_part}/{name}"),
    }
}

/// Everything that can go wrong in the store.
///
/// Variants that wrap another error keep it as their [`source`], and their own
/// message does not repeat it; log the whole chain (for example with
/// `error = &err as &dyn std::error::Error` in `tracing`) to see the cause.
///
/// [`source`]: std::error::Error::source
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The row does not exist (or no longer exists).
    #[error("{what} {id} does not exist")]
    NotFound { what: &'static str, id: Uuid },

    /// Postgres refused the statement or the connection broke.
    #[error("Postgres request failed")]
    Db(#[from] tokio_postgres::Error),

    /// No pooled connection could be had (Postgres unreachable, timeout, or
    /// the pool was closed).
    #[error("no Postgres connection available from the pool")]
    Pool(#[from] deadpool_postgres::PoolError),

    /// The connection pool could not be built.
    #[error("the Postgres connection pool could not be built")]
    BuildPool(#[from] deadpool_postgres::BuildError),

    /// The database URL could not be parsed.
    #[error("invalid database URL")]
    InvalidUrl(#[source] tokio_postgres::Error),

    /// Applying the schema migrations failed.
    #[error("database migration failed")]
    Migration(#[from] refinery::Error),

    /// A stored row holds a value Herald cannot read, for example a state that
    /// this version does not know. This points to a schema or version mismatch.
    #[error("stored {what} {id} is unreadable: {detail}")]
    Corrupt {
        what: &'static str,
        id: Uuid,
        detail: String,
    },

    /// A database operation did not finish in time.
    #[error("{what} did not finish within {after:?}")]
    Timeout { what: &'static str, after: Duration },

    /// A secret column could not be sealed or opened.
    #[error("webhook {id}: {source}")]
    Secret {
        id: Uuid,
        #[source]
        source: SecretBoxError,
    },

    /// The change would make the webhook invalid; nothing was written.
    #[error(transparent)]
    Invalid(#[from] herald_core::ValidationError),

    /// The attempt writer stopped before the record was committed; the record
    /// may or may not be stored, so the message must not be acknowledged.
    #[error("the attempt writer shut down before the write was committed")]
    WriterShutDown,
}

impl StoreError {
    /// Whether this is [`StoreError::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. })
    }
}

/// Builds a connection pool from a URL like
/// `postgres://postgres@127.0.0.1:5432/test` (key=value strings work too).
///
/// No connection is opened here; the pool connects on first use, so a service
/// can start while Postgres is still coming up.
pub fn pool(database_url: &str, max_size: usize) -> Result<Pool, StoreError> {
    let config = parse_url(database_url)?;
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            // A broken connection is noticed by tokio-postgres itself (the
            // client reports closed), so the cheap check is enough; a failed
            // statement surfaces as an error to the caller, who retries.
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let pool = Pool::builder(manager)
        .max_size(max_size)
        .runtime(Runtime::Tokio1)
        // Bounded creation and recycling so that callers get an error they can
        // act on (retry, serve from cache) instead of hanging while Postgres is
        // unreachable.
        .create_timeout(Some(CONNECT_TIMEOUT))
        .recycle_timeout(Some(CONNECT_TIMEOUT))
        .build()?;
    Ok(pool)
}

/// Parses a database URL and fills in the defaults Herald relies on.
fn parse_url(database_url: &str) -> Result<tokio_postgres::Config, StoreError> {
    let mut config: tokio_postgres::Config =
        database_url.parse().map_err(StoreError::InvalidUrl)?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        // Makes Herald's sessions recognisable in pg_stat_activity.
        config.application_name("herald");
    }
    Ok(config)
}

/// Opens a single connection outside the pool and drives it on a task.
///
/// Used where a session of its own matters: the advisory lock of [`migrate`]
/// is bound to the session that took it.
async fn connect_single(
    database_url: &str,
) -> Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>), StoreError> {
    let config = parse_url(database_url)?;
    let (client, connection) = config.connect(NoTls).await?;
    let driver = tokio::spawn(async move {
        if let Err(err) = connection.await {
            debug!(
                error = &err as &dyn std::error::Error,
                "Postgres connection ended"
            );
        }
    });
    Ok((client, driver))
}

/// Applies the embedded schema migrations (`migrations/V*__*.sql`).
///
/// Idempotent, and safe when several services start at once: it runs on a
/// connection of its own holding a Postgres advisory lock, so a second caller
/// waits and then finds nothing left to do.
pub async fn migrate(database_url: &str) -> Result<(), StoreError> {
    let (mut client, driver) = connect_single(database_url).await?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK_KEY])
        .await?;
    // A schema that a newer Herald already migrated further is fine: during
    // a rolling upgrade the old services restart against it. Herald's
    // migrations stay compatible with the release before (they add, never
    // rename or drop what that release reads; docs/operations.md,
    // "Upgrades"), so the migrations this binary does not know are
    // reported, not refused.
    let runner = embedded::migrations::runner().set_abort_missing(false);
    let report = runner.run_async(&mut client).await;
    let newest_applied = match &report {
        Ok(_) => runner
            .get_last_applied_migration_async(&mut client)
            .await
            .ok()
            .flatten()
            .map(|migration| migration.version()),
        Err(_) => None,
    };
    // Unlock explicitly even though closing the session would release the lock
    // too: it makes the waiting service proceed at once, and a failed unlock
    // is worth knowing about.
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK_KEY])
        .await;
    drop(client);
    if let Err(err) = driver.await {
        warn!(
            error = &err as &dyn std::error::Error,
            "migration connection task failed"
        );
    }
    let report = report?;
    unlocked?;
    let newest_known = runner
        .get_migrations()
        .iter()
        .map(refinery::Migration::version)
        .max();
    if let (Some(applied), Some(known)) = (newest_applied, newest_known)
        && applied > known
    {
        warn!(
            schema_version = applied,
            binary_version = known,
            "the database schema is newer than this binary (a newer Herald migrated it); \
             running on it as a rolling upgrade does: upgrade this service too"
        );
    }
    for migration in report.applied_migrations() {
        info!(
            version = migration.version(),
            name = migration.name(),
            "applied migration"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_name_is_replaced() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/test", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(with_database("postgres://h", "x"), "postgres://h/x");
        assert_eq!(
            with_database("postgresql://u:p@h/db?sslmode=disable", "x"),
            "postgresql://u:p@h/x?sslmode=disable"
        );
    }
    use crate::test_support::TestDb;

    #[test]
    fn bad_url_is_refused() {
        let err = pool("postgres://host:notaport/db", 4).expect_err("must be refused");
        assert!(matches!(err, StoreError::InvalidUrl(_)), "{err:?}");
        assert!(std::error::Error::source(&err).is_some());
    }

    #[tokio::test]
    async fn migrate_twice_and_concurrently() {
        let db = TestDb::create().await;
        let (a, b) = tokio::join!(migrate(db.url()), migrate(db.url()));
        a.expect("first concurrent migrate");
        b.expect("second concurrent migrate");
        migrate(db.url()).await.expect("migrate again");

        let client = db.connect().await;
        let row = client
            .query_one(
                "SELECT count(*) FROM information_schema.tables
                 WHERE table_schema = 'public'
                   AND table_name IN ('webhooks', 'deliveries', 'delivery_attempts')",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, i64>(0), 3);
        assert_eq!(
            applied_migrations(&client).await,
            embedded_migrations(),
            "each migration is applied exactly once"
        );
    }

    /// Rows of refinery's history table: migrations applied to the database.
    async fn applied_migrations(client: &tokio_postgres::Client) -> usize {
        let applied: i64 = client
            .query_one("SELECT count(*) FROM refinery_schema_history", &[])
            .await
            .unwrap()
            .get(0);
        usize::try_from(applied).unwrap()
    }

    /// Migrations this binary carries.
    fn embedded_migrations() -> usize {
        embedded::migrations::runner().get_migrations().len()
    }

    #[tokio::test]
    async fn an_older_binary_starts_on_a_schema_a_newer_one_migrated() {
        let db = TestDb::create().await;
        migrate(db.url()).await.expect("migrate");
        // What a newer release's migration leaves behind.
        let client = db.connect().await;
        client
            .execute(
                "INSERT INTO refinery_schema_history (version, name, applied_on, checksum) \
                 VALUES (9999, 'from_a_newer_release', '2026-11-30T10:00:00Z', '1')",
                &[],
            )
            .await
            .unwrap();
        migrate(db.url())
            .await
            .expect("a newer schema does not stop an older binary");
        assert_eq!(applied_migrations(&client).await, embedded_migrations() + 1);
    }
}
