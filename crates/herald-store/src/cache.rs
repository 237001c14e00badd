//! The live, in-memory webhook configuration.
//!
//! Fire must answer without waiting for Postgres and must keep working while
//! Postgres is briefly down, so every service holds the whole configuration in
//! memory. A watcher task follows changes through `LISTEN herald_config` (the
//! `webhooks` trigger notifies on every change) and, as a safety net for
//! missed notifications, reloads periodically.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};
use uuid::Uuid;

use crate::watch::Watched;
use crate::{Store, StoreError, Webhook, parse_url};

/// An immutable view of every webhook, indexed for Fire and ListEvents.
#[derive(Debug)]
pub struct ConfigSnapshot {
    /// Increases by one with every installed change.
    pub version: u64,
    /// Every webhook, ordered by tenant, first event, creation time and id.
    all: Vec<Arc<Webhook>>,
    by_tenant: HashMap<String, TenantIndex>,
    by_id: HashMap<Uuid, Arc<Webhook>>,
}

/// One tenant's webhooks, indexed by what they listen to.
#[derive(Debug, Default)]
struct TenantIndex {
    /// Exact event name -> the webhooks that list it, oldest first. A
    /// `BTreeMap` keeps `events()` sorted without extra work.
    exact: BTreeMap<String, Vec<Arc<Webhook>>>,
    /// The webhooks with a pattern entry (`order.*`, `*`), oldest first:
    /// Fire tests each of them, which is cheap for the few hundred
    /// patterns a tenant has.
    patterned: Vec<Arc<Webhook>>,
}

/// Oldest first, and the id for webhooks created in the same microsecond.
fn by_age(a: &Arc<Webhook>, b: &Arc<Webhook>) -> std::cmp::Ordering {
    (a.created_at, a.id).cmp(&(b.created_at, b.id))
}

impl ConfigSnapshot {
    pub fn from_webhooks(version: u64, mut webhooks: Vec<Webhook>) -> Self {
        sort_for_snapshot(&mut webhooks);
        let all: Vec<Arc<Webhook>> = webhooks.into_iter().map(Arc::new).collect();
        let mut by_tenant: HashMap<String, TenantIndex> = HashMap::new();
        let mut by_id = HashMap::with_capacity(all.len());
        for webhook in &all {
            let index = by_tenant.entry(webhook.tenant.clone()).or_default();
            for event in webhook.events.exact() {
                index
                    .exact
                    .entry(event.to_owned())
                    .or_default()
                    .push(Arc::clone(webhook));
            }
            if webhook.events.has_patterns() {
                index.patterned.push(Arc::clone(webhook));
            }
            by_id.insert(webhook.id, Arc::clone(webhook));
        }
        for index in by_tenant.values_mut() {
            for webhooks in index.exact.values_mut() {
                webhooks.sort_by(by_age);
            }
            index.patterned.sort_by(by_age);
        }
        Self {
            version,
            all,
            by_tenant,
            by_id,
        }
    }

    /// The webhooks an event of `tenant` reaches, by name or by pattern,
    /// disabled ones included, each once, oldest first. Borrowed when no
    /// pattern is involved, which keeps Fire of exact subscriptions free of
    /// allocations.
    pub fn webhooks_for(&self, tenant: &str, event: &str) -> Cow<'_, [Arc<Webhook>]> {
        let Some(index) = self.by_tenant.get(tenant) else {
            return Cow::Borrowed(&[]);
        };
        let exact = index.exact.get(event).map_or(&[][..], Vec::as_slice);
        let mut patterned = index
            .patterned
            .iter()
            .filter(|w| w.events.matches(event))
            .peekable();
        if patterned.peek().is_none() {
            return Cow::Borrowed(exact);
        }
        let mut merged: Vec<Arc<Webhook>> = exact.to_vec();
        for webhook in patterned {
            if !exact.iter().any(|w| w.id == webhook.id) {
                merged.push(Arc::clone(webhook));
            }
        }
        merged.sort_by(by_age);
        Cow::Owned(merged)
    }

    pub fn webhook(&self, id: Uuid) -> Option<&Arc<Webhook>> {
        self.by_id.get(&id)
    }

    /// The concrete events of a tenant (those some webhook lists by name),
    /// sorted by name, each with every webhook it reaches, patterns
    /// included.
    pub fn events(&self, tenant: &str) -> Vec<(&str, Cow<'_, [Arc<Webhook>]>)> {
        self.by_tenant
            .get(tenant)
            .map(|index| {
                index
                    .exact
                    .keys()
                    .map(|event| (event.as_str(), self.webhooks_for(tenant, event)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every webhook, ordered by tenant, first event and creation time.
    pub fn all(&self) -> &[Arc<Webhook>] {
        &self.all
    }

    /// Whether `webhooks` (in the order `from_webhooks` sorts them) is exactly
    /// what this snapshot holds.
    fn holds(&self, webhooks: &[Webhook]) -> bool {
        self.all.len() == webhooks.len()
            && self
                .all
                .iter()
                .zip(webhooks)
                .all(|(held, new)| **held == *new)
    }
}

/// The order of `ConfigSnapshot::all`: by tenant, first event, creation time, and
/// id for webhooks created in the same microsecond.
fn sort_for_snapshot(webhooks: &mut [Webhook]) {
    webhooks.sort_by_cached_key(|w| (w.tenant.clone(), w.events.first(), w.created_at, w.id));
}

/// A shared handle to the live configuration.
#[derive(Clone, Debug)]
pub struct ConfigCache {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    /// Holds the current snapshot. A watch channel is both the cheap
    /// read-mostly cell readers need (a read lock held only to clone an `Arc`)
    /// and the way `wait_newer_than` learns about new versions.
    current: watch::Sender<Arc<ConfigSnapshot>>,
    /// Serialises reloads. Without it a slow reload that started before a
    /// change could finish after a quick one that saw it, and install the
    /// older configuration over the newer.
    reload_lock: Mutex<()>,
}

impl ConfigCache {
    /// Loads the snapshot once (an error here is returned, since a service
    /// without configuration cannot serve), then spawns a watcher task that
    /// keeps it fresh until `shutdown` is cancelled.
    ///
    /// `database_url` is used for the watcher's own `LISTEN` connection, which
    /// must stay open and so cannot come from the pool.
    pub async fn start(
        store: Store,
        database_url: &str,
        refresh_every: Duration,
        shutdown: CancellationToken,
    ) -> Result<ConfigCache, StoreError> {
        // Checked now so that a bad URL fails the start instead of turning
        // into an endless reconnect loop.
        parse_url(database_url)?;
        let webhooks = store.list_webhooks(None, None).await?;
        let snapshot = ConfigSnapshot::from_webhooks(1, webhooks);
        info!(
            webhooks = snapshot.all.len(),
            "loaded webhook configuration"
        );
        let (current, _) = watch::channel(Arc::new(snapshot));
        let cache = ConfigCache {
            inner: Arc::new(Inner {
                store,
                current,
                reload_lock: Mutex::new(()),
            }),
        };
        crate::watch::spawn(cache.clone(), database_url, refresh_every, shutdown);
        Ok(cache)
    }

    /// The current configuration. Cheap; hold the `Arc` for as long as one
    /// consistent view is needed (e.g. for one Fire call).
    pub fn snapshot(&self) -> Arc<ConfigSnapshot> {
        Arc::clone(&self.inner.current.borrow())
    }

    /// Resolves once a snapshot with a version greater than `after` is
    /// installed (immediately if it already is).
    pub async fn wait_newer_than(&self, after: u64) {
        let mut versions = self.inner.current.subscribe();
        // The sender lives in `self.inner`, so the channel cannot close while
        // we wait and the error case cannot happen.
        let _ = versions.wait_for(|s| s.version > after).await;
    }

    /// Reloads the configuration from Postgres now and installs it.
    ///
    /// A new version is installed only when the configuration actually
    /// changed. That way a version bump always means "something newer is
    /// visible", which is what `wait_newer_than` callers rely on.
    pub async fn reload(&self) -> Result<(), StoreError> {
        let _serialised = self.inner.reload_lock.lock().await;
        let mut webhooks = self.inner.store.list_webhooks(None, None).await?;
        let current = self.snapshot();
        // `list_webhooks` orders this way already; sorting again is cheap and
        // keeps `holds` correct should that query's order ever change.
        sort_for_snapshot(&mut webhooks);
        if current.holds(&webhooks) {
            debug!(version = current.version, "webhook configuration unchanged");
            return Ok(());
        }
        let next = ConfigSnapshot::from_webhooks(current.version + 1, webhooks);
        debug!(
            version = next.version,
            webhooks = next.all.len(),
            "installed new webhook configuration"
        );
        self.inner.current.send_replace(Arc::new(next));
        Ok(())
    }
}

/// The `webhooks` trigger notifies `herald_config`.
impl Watched for ConfigCache {
    const WHAT: &'static str = "webhook configuration";
    const CHANNEL: &'static str = "herald_config";

    async fn reload(&self) -> Result<(), StoreError> {
        ConfigCache::reload(self).await
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::SystemTime;

    use herald_core::{Method, NewWebhook};

    use super::*;
    use crate::test_support::TestDb;

    fn webhook(tenant: &str, event: &str, created_secs: u64) -> Webhook {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(created_secs);
        Webhook {
            ordered: Default::default(),
            on_failure: Default::default(),
            rate_limit: None,
            breaker: None,
            auto_disable_after: None,
            disabled_reason: None,
            disabled_at: None,
            id: Uuid::now_v7(),
            tenant: tenant.into(),
            events: herald_core::subscription::Subscription::parse(&[event]).unwrap(),
            filter: None,
            enabled: true,
            method: Method::Post,
            url: "https://a.example/".into(),
            headers: BTreeMap::new(),
            body_template: None,
            timeout_ms: 3000,
            description: String::new(),
            created_at: at,
            updated_at: at,
            body_mode: herald_core::webhook::BodyMode::Raw,
            content_type: None,
            secret_headers: herald_core::webhook::SecretHeaders::default(),
            signing: None,
            id_header: None,
            trace_context: false,
        }
    }

    #[test]
    fn snapshot_indexes() {
        let newer = webhook("t", "order.created", 20);
        let older = webhook("t", "order.created", 10);
        let mut disabled = webhook("t", "a.event", 5);
        disabled.enabled = false;
        let other_tenant = webhook("", "order.created", 1);
        let snapshot = ConfigSnapshot::from_webhooks(
            7,
            vec![
                newer.clone(),
                older.clone(),
                disabled.clone(),
                other_tenant.clone(),
            ],
        );
        assert_eq!(snapshot.version, 7);
        let ids: Vec<Uuid> = snapshot
            .webhooks_for("t", "order.created")
            .iter()
            .map(|w| w.id)
            .collect();
        assert_eq!(ids, [older.id, newer.id], "oldest first");
        assert_eq!(
            snapshot.webhooks_for("t", "a.event").len(),
            1,
            "disabled included"
        );
        assert!(snapshot.webhooks_for("t", "missing").is_empty());
        assert!(snapshot.webhooks_for("missing", "order.created").is_empty());
        assert_eq!(snapshot.webhook(other_tenant.id).unwrap().tenant, "");
        assert!(snapshot.webhook(Uuid::nil()).is_none());
        let events: Vec<(&str, usize)> = snapshot
            .events("t")
            .into_iter()
            .map(|(e, ws)| (e, ws.len()))
            .collect();
        assert_eq!(events, [("a.event", 1), ("order.created", 2)]);
        assert!(snapshot.events("nobody").is_empty());
        assert_eq!(snapshot.all().len(), 4);
    }

    fn new_webhook(event: &str) -> NewWebhook {
        NewWebhook {
            ordered: Default::default(),
            on_failure: Default::default(),
            rate_limit: None,
            breaker: None,
            auto_disable_after: None,
            tenant: "shop".into(),
            events: herald_core::subscription::Subscription::parse(&[event]).unwrap(),
            filter: None,
            enabled: true,
            method: Method::Post,
            url: "https://shop.example/hook".into(),
            headers: BTreeMap::new(),
            body_template: None,
            timeout_ms: 3000,
            description: String::new(),
            body_mode: herald_core::webhook::BodyMode::Raw,
            content_type: None,
            secret_headers: herald_core::webhook::SecretHeaders::default(),
            signing: None,
            id_header: None,
            trace_context: false,
        }
    }

    /// Waits (up to `limit`) until the cache satisfies `done`.
    async fn eventually(
        cache: &ConfigCache,
        limit: Duration,
        done: impl Fn(&ConfigSnapshot) -> bool,
    ) {
        tokio::time::timeout(limit, async {
            loop {
                let snapshot = cache.snapshot();
                if done(&snapshot) {
                    return;
                }
                cache.wait_newer_than(snapshot.version).await;
            }
        })
        .await
        .expect("the cache did not catch up in time");
    }

    #[tokio::test]
    async fn cache_follows_changes_through_notify() {
        let db = TestDb::migrated().await;
        let store = Store::new(db.pool());
        let existing = store
            .create_webhook(&new_webhook("order.created"))
            .await
            .unwrap();

        let shutdown = CancellationToken::new();
        // An hour between refreshes, so only NOTIFY can explain a quick update.
        let cache = ConfigCache::start(
            store.clone(),
            db.url(),
            Duration::from_secs(3600),
            shutdown.clone(),
        )
        .await
        .unwrap();
        let first = cache.snapshot();
        assert!(first.webhook(existing.id).is_some());

        // A raw insert through a plain connection, as an operator might do.
        let id = Uuid::now_v7();
        let client = db.connect().await;
        client
            .execute(
                "INSERT INTO webhooks (id, tenant, event, method, url) \
                 VALUES ($1, 'shop', 'order.paid', 'PUT', 'https://x.example/')",
                &[&id],
            )
            .await
            .unwrap();
        eventually(&cache, Duration::from_secs(2), |s| s.webhook(id).is_some()).await;
        let snapshot = cache.snapshot();
        assert!(snapshot.version > first.version);
        let events: Vec<&str> = snapshot
            .events("shop")
            .into_iter()
            .map(|(e, _)| e)
            .collect();
        assert_eq!(events, ["order.created", "order.paid"]);
        assert_eq!(snapshot.webhook(id).unwrap().method, Method::Put);

        client
            .execute("DELETE FROM webhooks WHERE id = $1", &[&existing.id])
            .await
            .unwrap();
        eventually(&cache, Duration::from_secs(2), |s| {
            s.webhook(existing.id).is_none()
        })
        .await;

        // An explicit reload makes a write visible at once, and a reload that
        // finds nothing new does not bump the version.
        let disabled = store.set_webhook_enabled(id, false).await.unwrap();
        cache.reload().await.unwrap();
        let after = cache.snapshot();
        assert_eq!(**after.webhook(id).unwrap(), disabled);
        cache.reload().await.unwrap();
        assert_eq!(cache.snapshot().version, after.version);

        shutdown.cancel();
    }

    #[tokio::test]
    async fn cache_survives_a_lost_listener_connection() {
        let db = TestDb::migrated().await;
        let store = Store::new(db.pool());
        let shutdown = CancellationToken::new();
        let cache = ConfigCache::start(
            store.clone(),
            db.url(),
            Duration::from_secs(3600),
            shutdown.clone(),
        )
        .await
        .unwrap();

        // Kill every other session of the test database, the listener and
        // the pooled connections included.
        let admin = db.connect().await;
        let killed = || async {
            admin
                .execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE datname = current_database() AND pid <> pg_backend_pid()",
                    &[],
                )
                .await
                .unwrap();
        };
        // Wait until the listener is connected, so that it is what we kill.
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                let listening: i64 = admin
                    .query_one(
                        "SELECT count(*) FROM pg_stat_activity \
                         WHERE datname = current_database() AND query LIKE 'LISTEN%'",
                        &[],
                    )
                    .await
                    .unwrap()
                    .get(0);
                if listening > 0 {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("listener connected");
        killed().await;
        let before = cache.snapshot().version;
        assert!(
            cache.snapshot().all().is_empty(),
            "the last snapshot is still served"
        );

        // A change made right after is picked up by the reload on reconnect
        // or by the notification on the new connection.
        let id = Uuid::now_v7();
        admin
            .execute(
                "INSERT INTO webhooks (id, event, method, url) \
                 VALUES ($1, 'e', 'POST', 'https://x.example/')",
                &[&id],
            )
            .await
            .unwrap();
        eventually(&cache, Duration::from_secs(3), |s| s.webhook(id).is_some()).await;
        assert!(cache.snapshot().version > before);
        shutdown.cancel();
    }
}
