//! Server-rendered SVG charts of a webhook's timeline: deliveries per hour
//! by outcome, and attempt durations per hour. No JavaScript.

use herald_proto::v1::{TimelineBucket, WebhookTimeline};
use maud::{Markup, html};

use crate::time_fmt;

const WIDTH: f64 = 840.0;
const HEIGHT: f64 = 150.0;
const LEFT: f64 = 48.0;
const BOTTOM: f64 = 20.0;
const DAY_MS: i64 = 24 * 3600 * 1000;

/// The x position and width of each bucket over the 7 days before `now`.
struct Axis {
    start_ms: i64,
    bucket_ms: i64,
    slots: i64,
}

impl Axis {
    fn of(t: &WebhookTimeline, now_ms: i64) -> Self {
        let bucket_ms = i64::from(t.bucket_seconds.max(60)) * 1000;
        let end = now_ms - now_ms.rem_euclid(bucket_ms) + bucket_ms;
        let slots = (7 * DAY_MS / bucket_ms).max(1);
        Self {
            start_ms: end - slots * bucket_ms,
            bucket_ms,
            slots,
        }
    }

    fn slot_width(&self) -> f64 {
        (WIDTH - LEFT) / self.slots as f64
    }

    fn x(&self, ms: i64) -> f64 {
        LEFT + ((ms - self.start_ms) as f64 / self.bucket_ms as f64) * self.slot_width()
    }

    fn visible<'a>(&self, t: &'a WebhookTimeline) -> impl Iterator<Item = &'a TimelineBucket> {
        let start = self.start_ms;
        t.buckets.iter().filter(move |b| b.start_unix_ms >= start)
    }

    /// Day lines and labels.
    fn days(&self) -> Markup {
        let first = self.start_ms - self.start_ms.rem_euclid(DAY_MS) + DAY_MS;
        let plot = HEIGHT - BOTTOM;
        html! {
            @for day in (0..8).map(|i| first + i * DAY_MS).filter(|d| *d < self.start_ms + self.slots * self.bucket_ms) {
                line x1=(self.x(day)) x2=(self.x(day)) y1="0" y2=(plot) class="grid" {}
                text x=(self.x(day) + 2.0) y=(HEIGHT - 6.0) class="label" { (&time_fmt::show(day)[5..10]) }
            }
        }
    }
}

/// Deliveries fired per bucket, stacked by their state now.
pub fn deliveries(t: &WebhookTimeline, now_ms: i64) -> Markup {
    let axis = Axis::of(t, now_ms);
    let max = axis.visible(t).map(|b| b.fired).max().unwrap_or(0).max(1) as f64;
    let plot = HEIGHT - BOTTOM;
    let w = (axis.slot_width() - 0.5).max(0.5);
    let total: u64 = axis.visible(t).map(|b| b.fired).sum();
    html! {
        figure #chart-deliveries {
            figcaption { "Deliveries per hour by outcome (" (total) " in 7 days; UTC)" }
            svg viewBox={ "0 0 " (WIDTH) " " (HEIGHT) } width="100%" role="img"
                aria-label="Deliveries per hour by outcome over the last 7 days" {
                text x="2" y="12" class="label" { (max as u64) }
                text x="2" y=(plot) class="label" { "0" }
                (axis.days())
                @for b in axis.visible(t) {
                    @let x = axis.x(b.start_unix_ms);
                    @let parts = [
                        ("succeeded", b.succeeded),
                        ("failed", b.failed),
                        ("pending", b.pending + b.scheduled),
                        ("cancelled", b.cancelled),
                    ];
                    @let mut y = plot;
                    @for (class, n) in parts {
                        @if n > 0 {
                            @let h = n as f64 / max * (plot - 4.0);
                            @let top = { y -= h; y };
                            rect x=(x) y=(top) width=(w) height=(h) class={ "bar state-" (class) } {
                                title { (time_fmt::show(b.start_unix_ms)) ": " (n) " " (class) }
                            }
                        }
                    }
                }
            }
            p.legend {
                span.key.state-succeeded {} " succeeded "
                span.key.state-failed {} " failed "
                span.key.state-pending {} " pending "
                span.key.state-cancelled {} " cancelled"
            }
        }
    }
}

/// Attempt durations per bucket: p95 as bars, p50 as a darker mark.
pub fn latency(t: &WebhookTimeline, now_ms: i64) -> Markup {
    let axis = Axis::of(t, now_ms);
    let max = axis
        .visible(t)
        .map(|b| b.p95_attempt_ms)
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let plot = HEIGHT - BOTTOM;
    let w = (axis.slot_width() - 0.5).max(0.5);
    html! {
        figure #chart-latency {
            figcaption { "Attempt duration per hour: p95 bars, p50 marks (ms; UTC)" }
            svg viewBox={ "0 0 " (WIDTH) " " (HEIGHT) } width="100%" role="img"
                aria-label="Attempt durations per hour over the last 7 days" {
                text x="2" y="12" class="label" { (max as u64) " ms" }
                text x="2" y=(plot) class="label" { "0" }
                (axis.days())
                @for b in axis.visible(t).filter(|b| b.attempts > 0) {
                    @let x = axis.x(b.start_unix_ms);
                    @let h95 = f64::from(b.p95_attempt_ms) / max * (plot - 4.0);
                    @let h50 = f64::from(b.p50_attempt_ms) / max * (plot - 4.0);
                    rect x=(x) y=(plot - h95) width=(w) height=(h95) class="bar p95" {
                        title { (time_fmt::show(b.start_unix_ms)) ": p95 " (b.p95_attempt_ms) " ms, p50 " (b.p50_attempt_ms) " ms, " (b.attempts) " attempts" }
                    }
                    rect x=(x) y=(plot - h50 - 1.0) width=(w) height="2" class="mark p50" {}
                }
            }
        }
    }
}
