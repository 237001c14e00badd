//! Circuit breakers per webhook, as one sender sees and feeds them.
//!
//! Each sender keeps a view of the webhooks that are in trouble (failing,
//! or with a breaker that is not closed), read from Postgres every second
//! and updated at once from what its own records return; a webhook not in
//! the view is attempted without any database work. A delivery to a
//! webhook whose breaker is open is parked for up to the rest of the
//! cool-down (not an attempt: its schedule is not used up). When the
//! cool-down is over, the first sender to take the probe (one statement,
//! one winner for the fleet) makes one attempt; its answer closes the
//! breaker or opens it again for twice as long.
//!
//! The rules are herald-core's (`breaker`); the shared state is
//! herald-store's (`HealthStore`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use herald_core::Webhook;
use herald_core::breaker::{BreakerPolicy, BreakerState, Health, Transition, disable_reason};
use herald_core::operational::{self, OperationalEvent, unix_ms};
use herald_store::HealthStore;
use metrics::{Counter, Gauge};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// How often a sender reads which webhooks are in trouble.
pub(crate) const REFRESH: Duration = Duration::from_secs(1);

/// How long recording an attempt's health may take before the sender goes
/// on without it: the request's slot waits for it, and a slow or absent
/// Postgres must not hold a failing webhook's slots (the attempt itself
/// cannot be stored then either, so the delivery is repeated anyway).
const RECORD_TIMEOUT: Duration = Duration::from_secs(2);

/// What a delivery may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Gate {
    /// Attempt it.
    Go,
    /// Attempt it as the breaker's one probe.
    Probe,
    /// Park it: the breaker is open (or its probe is out) for about this
    /// long still.
    Park(Duration),
}

/// A webhook's answers not yet recorded, and the right to record them.
#[derive(Default)]
struct Recording {
    /// What each answer said, whether it was the probe, its status.
    queue: Mutex<Vec<(Health, bool, Option<u16>)>>,
    /// Held while one record of the webhook is being written.
    writing: tokio::sync::Mutex<()>,
}

/// One troubled webhook in this sender's view.
#[derive(Debug, Clone, Copy)]
struct Local {
    state: BreakerState,
    /// Open: when the cool-down ends; half open: when the probe's lease ends.
    until: Instant,
}

/// When Herald disables a failing webhook, for the whole deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AutoDisable {
    /// How long every attempt may fail first (a webhook may set its own);
    /// zero = never.
    pub after: Duration,
    /// A `410 Gone` answer disables at once.
    pub on_gone: bool,
}

pub(crate) struct Breakers {
    store: HealthStore,
    policy: BreakerPolicy,
    auto_disable: AutoDisable,
    view: Mutex<HashMap<Uuid, Local>>,
    /// Each webhook's answers waiting to be recorded (see `record`).
    recordings: Mutex<HashMap<Uuid, Arc<Recording>>>,
    /// Whether the view holds any webhook: with none in trouble (nearly
    /// always), a delivery does not even take the view's lock.
    any: AtomicBool,
    parked: Counter,
    opened: Counter,
    reopened: Counter,
    recovered: Counter,
    open: Gauge,
    disabled: Counter,
}

impl Breakers {
    /// Starts the view's refresh, which runs until `stop`.
    pub(crate) fn start(
        store: HealthStore,
        policy: BreakerPolicy,
        auto_disable: AutoDisable,
        stop: CancellationToken,
    ) -> Arc<Self> {
        let transition =
            |to: &'static str| metrics::counter!("herald_breaker_transitions_total", "to" => to);
        let breakers = Arc::new(Self {
            store,
            policy,
            auto_disable,
            view: Mutex::new(HashMap::new()),
            recordings: Mutex::new(HashMap::new()),
            any: AtomicBool::new(false),
            parked: metrics::counter!("herald_breaker_parked_total"),
            opened: transition("opened"),
            reopened: transition("reopened"),
            recovered: transition("recovered"),
            open: metrics::gauge!("herald_breakers_open"),
            disabled: metrics::counter!("herald_webhooks_auto_disabled_total"),
        });
        let refreshing = breakers.clone();
        tokio::spawn(async move {
            loop {
                refreshing.refresh().await;
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(REFRESH) => {}
                }
            }
        });
        breakers
    }

    fn view(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Local>> {
        self.view.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Changes the view (every change goes through here, which keeps `any`
    /// true).
    fn change(&self, f: impl FnOnce(&mut HashMap<Uuid, Local>)) {
        let mut view = self.view();
        f(&mut view);
        self.any.store(!view.is_empty(), Ordering::Release);
    }

    async fn refresh(&self) {
        match self.store.troubled().await {
            Ok(troubled) => {
                let now = Instant::now();
                let view: HashMap<Uuid, Local> = troubled
                    .into_iter()
                    .map(|t| {
                        let local = Local {
                            state: t.state,
                            until: now + t.wait,
                        };
                        (t.webhook_id, local)
                    })
                    .collect();
                let open = view
                    .values()
                    .filter(|l| l.state != BreakerState::Closed)
                    .count();
                #[allow(clippy::cast_precision_loss)]
                self.open.set(open as f64);
                self.change(|current| *current = view);
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the webhooks' breakers; keeping the last view")
            }
        }
    }

    /// Whether `webhook` is in trouble as far as this sender knows (a
    /// lookup in memory; false for nearly every delivery).
    pub(crate) fn troubled(&self, webhook: Uuid) -> bool {
        self.any.load(Ordering::Acquire) && self.view().contains_key(&webhook)
    }

    /// What a delivery to `webhook` may do now.
    pub(crate) async fn gate(&self, webhook: &Webhook) -> Gate {
        let Some(local) = self.view().get(&webhook.id).copied() else {
            return Gate::Go;
        };
        let now = Instant::now();
        match local.state {
            BreakerState::Closed => return Gate::Go,
            BreakerState::Open | BreakerState::HalfOpen if local.until > now => {
                self.parked.increment(1);
                return Gate::Park(local.until - now);
            }
            BreakerState::Open | BreakerState::HalfOpen => {}
        }
        // The probe's lease: the request's timeout and a margin for
        // recording it; a sender that dies with the probe frees it then.
        let lease = webhook.timeout() + Duration::from_secs(5);
        let taking = tokio::time::timeout(RECORD_TIMEOUT, self.store.take_probe(webhook.id, lease));
        match taking.await.unwrap_or(Ok(false)) {
            Ok(true) => {
                self.change(|view| {
                    view.insert(
                        webhook.id,
                        Local {
                            state: BreakerState::HalfOpen,
                            until: now + lease,
                        },
                    );
                });
                tracing::info!(webhook_id = %webhook.id, "breaker half open: this attempt is its probe");
                Gate::Probe
            }
            taken => {
                if let Err(e) = taken {
                    tracing::warn!(error = %e, webhook_id = %webhook.id, "cannot take the breaker's probe");
                }
                // Another sender probes (or the database did not answer):
                // this one parks the webhook's deliveries without asking
                // again until the next refresh, so that a backlog coming
                // back from the parking queue costs one round trip, not one
                // each.
                self.change(|view| {
                    view.insert(
                        webhook.id,
                        Local {
                            state: BreakerState::HalfOpen,
                            until: now + REFRESH,
                        },
                    );
                });
                self.parked.increment(1);
                Gate::Park(Duration::ZERO)
            }
        }
    }

    /// The counters, the log line and the operational event of one change
    /// of `webhook`'s breaker.
    fn notice(
        &self,
        webhook: &Webhook,
        recorded: &herald_store::Recorded,
        transition: Transition,
        notices: &mut Vec<Notice>,
    ) {
        match transition {
            Transition::Opened => {
                self.opened.increment(1);
                let opened_at = recorded.record.opened_at.unwrap_or_else(SystemTime::now);
                notices.push(Notice {
                    event: OperationalEvent::BreakerOpened,
                    key: format!("{}", unix_ms(opened_at)),
                    data: operational::breaker_opened_data(
                        webhook.id,
                        recorded.record.consecutive_failures,
                        opened_at,
                        recorded.record.cooldown.unwrap_or_default(),
                    ),
                });
                tracing::warn!(webhook_id = %webhook.id, failures = recorded.record.consecutive_failures, cooldown = ?recorded.record.cooldown, "breaker opened: deliveries are parked until the cool-down ends");
            }
            Transition::Reopened => {
                self.reopened.increment(1);
                tracing::warn!(webhook_id = %webhook.id, cooldown = ?recorded.record.cooldown, "the probe failed; breaker open again");
            }
            Transition::Recovered => {
                self.recovered.increment(1);
                let now = SystemTime::now();
                notices.push(Notice {
                    event: OperationalEvent::WebhookRecovered,
                    key: format!("{}", unix_ms(now)),
                    data: operational::webhook_recovered_data(webhook.id, now),
                });
                tracing::info!(webhook_id = %webhook.id, "breaker closed: the webhook recovered");
            }
        }
    }

    /// Records an attempt of `webhook` whose answer says `health` (with
    /// `status`, if the receiver answered), and disables the webhook when
    /// it has failed for too long or is gone. Nothing is written for a
    /// success of a webhook that is not in trouble. Returns the operational
    /// events the changes call for (the caller sends them).
    pub(crate) async fn record(
        &self,
        webhook: &Webhook,
        health: Health,
        status: Option<u16>,
        probe: bool,
    ) -> Vec<Notice> {
        let mut notices = Vec::new();
        if health == Health::Up && !probe && !self.troubled(webhook.id) {
            return notices;
        }
        // Group commit: the answer joins the webhook's queue, and one
        // record at a time per webhook (in this sender) writes all that
        // queued meanwhile. A failure storm then costs one transaction on
        // the webhook's row at a time per sender, instead of one per attempt
        // waiting on the row's lock and holding a pooled connection. Each
        // caller still returns only once its answer is written (by itself or
        // by the record before it).
        let recording = {
            let mut recordings = self
                .recordings
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            recordings.entry(webhook.id).or_default().clone()
        };
        recording
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((health, probe, status));
        let _writing = recording.writing.lock().await;
        let batch = std::mem::take(
            &mut *recording
                .queue
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        if batch.is_empty() {
            // The record before this one wrote this answer too.
            return notices;
        }
        let answers: Vec<(Health, bool)> = batch.iter().map(|&(h, p, _)| (h, p)).collect();
        // A 410 anywhere in the batch counts, as if it came alone.
        let status = batch
            .iter()
            .map(|&(_, _, status)| status)
            .find(|s| *s == Some(410))
            .unwrap_or(batch.last().and_then(|&(_, _, status)| status));
        let policy = self.policy.for_webhook(webhook.breaker);
        let recording = self.store.record(webhook.id, &answers, policy);
        let recorded = match tokio::time::timeout(RECORD_TIMEOUT, recording).await {
            Ok(Ok(recorded)) => recorded,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, webhook_id = %webhook.id, "cannot record the webhook's health");
                return notices;
            }
            Err(_) => {
                tracing::warn!(webhook_id = %webhook.id, "recording the webhook's health took over {RECORD_TIMEOUT:?}; going on without it");
                return notices;
            }
        };
        self.change(|view| {
            if recorded.record == Default::default() {
                view.remove(&webhook.id);
            } else {
                let until = Instant::now() + recorded.open_for.unwrap_or_default();
                view.insert(
                    webhook.id,
                    Local {
                        state: recorded.record.state,
                        until,
                    },
                );
            }
        });
        for transition in &recorded.transitions {
            self.notice(webhook, &recorded, *transition, &mut notices);
        }
        let window = webhook
            .auto_disable_after
            .unwrap_or(self.auto_disable.after);
        let reason = disable_reason(
            status,
            recorded.failing_for,
            window,
            self.auto_disable.on_gone,
        );
        if let Some(reason) = reason {
            match self.store.disable_webhook(webhook.id, &reason).await {
                Ok(true) => {
                    self.disabled.increment(1);
                    tracing::warn!(webhook_id = %webhook.id, %reason, "webhook disabled; its pending deliveries will be cancelled");
                    let now = SystemTime::now();
                    notices.push(Notice {
                        event: OperationalEvent::WebhookDisabled,
                        key: format!("{}", unix_ms(now)),
                        data: operational::webhook_disabled_data(webhook.id, &reason, now),
                    });
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, webhook_id = %webhook.id, "cannot disable the webhook");
                }
            }
        }
        notices
    }
}

/// An operational event a breaker's change calls for.
#[derive(Debug)]
pub(crate) struct Notice {
    pub event: OperationalEvent,
    /// What makes it unique for its webhook (its delivery id comes from it).
    pub key: String,
    pub data: String,
}
