//! A webhook's last 7 days as one SVG image, drawn on the server:
//! deliveries per hour by outcome, and attempt durations per hour. No
//! JavaScript.
//!
//! The webhook page embeds it with `<img>`, so the page itself answers at
//! once and the browser fetches the chart beside it: counting a busy
//! webhook's week takes seconds (docs/console.md). Inside an image a
//! stylesheet does not apply, so colours are presentation attributes.

use herald_proto::v1::{TimelineBucket, WebhookTimeline};
use maud::{Markup, html};

use crate::time_fmt;

const WIDTH: f64 = 840.0;
/// Height of one chart's plot area.
const PLOT: f64 = 130.0;
const LEFT: f64 = 52.0;
const DAY_MS: i64 = 24 * 3600 * 1000;
/// Top of each chart (caption above it).
const TOP: [f64; 2] = [22.0, 222.0];
/// Height of the whole image.
pub const HEIGHT: f64 = 380.0;

const GRID: &str = "#d9dde5";
const TEXT: &str = "#5b6475";
/// Colours of the outcomes, as in the stylesheet.
const OUTCOMES: [(&str, &str); 4] = [
    ("succeeded", "#2e8540"),
    ("failed", "#c62828"),
    ("pending", "#d68a00"),
    ("cancelled", "#8a8f99"),
];

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

    #[allow(clippy::cast_precision_loss)]
    fn slot_width(&self) -> f64 {
        (WIDTH - LEFT) / self.slots as f64
    }

    #[allow(clippy::cast_precision_loss)]
    fn x(&self, ms: i64) -> f64 {
        LEFT + ((ms - self.start_ms) as f64 / self.bucket_ms as f64) * self.slot_width()
    }

    fn visible<'a>(&self, t: &'a WebhookTimeline) -> impl Iterator<Item = &'a TimelineBucket> {
        let start = self.start_ms;
        t.buckets.iter().filter(move |b| b.start_unix_ms >= start)
    }

    /// Day lines and their dates under a chart whose plot starts at `top`.
    fn days(&self, top: f64) -> Markup {
        let first = self.start_ms - self.start_ms.rem_euclid(DAY_MS) + DAY_MS;
        let end = self.start_ms + self.slots * self.bucket_ms;
        html! {
            @for day in (0..8).map(|i| first + i * DAY_MS).filter(|d| *d < end) {
                line x1=(self.x(day)) x2=(self.x(day)) y1=(top) y2=(top + PLOT) stroke=(GRID) {}
                // The date of a day that starts at the right edge would
                // be cut off; its line says enough.
                @if self.x(day) + 30.0 < WIDTH {
                    text x=(self.x(day) + 2.0) y=(top + PLOT + 13.0) font-size="10" fill=(TEXT) {
                        (&time_fmt::show(day)[5..10])
                    }
                }
            }
        }
    }
}

/// The image: both charts, one above the other.
pub fn document(t: &WebhookTimeline, now_ms: i64) -> Markup {
    html! {
        svg xmlns="http://www.w3.org/2000/svg" viewBox={ "0 0 " (WIDTH) " " (HEIGHT) }
            width=(WIDTH) height=(HEIGHT) font-family="sans-serif" {
            (deliveries(t, now_ms, TOP[0]))
            (latency(t, now_ms, TOP[1]))
        }
    }
}

/// Deliveries fired per bucket, stacked by their state now.
#[allow(clippy::cast_precision_loss)]
fn deliveries(t: &WebhookTimeline, now_ms: i64, top: f64) -> Markup {
    let axis = Axis::of(t, now_ms);
    let max = axis.visible(t).map(|b| b.fired).max().unwrap_or(0).max(1) as f64;
    let w = (axis.slot_width() - 0.5).max(0.5);
    let total: u64 = axis.visible(t).map(|b| b.fired).sum();
    let bottom = top + PLOT;
    html! {
        text #deliveries-total x="0" y=(top - 8.0) font-size="12" fill=(TEXT) {
            "Deliveries per hour by outcome: " (total) " deliveries in 7 days (UTC)"
        }
        text x="0" y=(top + 10.0) font-size="10" fill=(TEXT) { (max as u64) }
        text x="0" y=(bottom) font-size="10" fill=(TEXT) { "0" }
        (axis.days(top))
        @for b in axis.visible(t) {
            @let x = axis.x(b.start_unix_ms);
            @let parts = [b.succeeded, b.failed, b.pending + b.scheduled, b.cancelled];
            @let mut y = bottom;
            @for (n, (_, colour)) in parts.into_iter().zip(OUTCOMES) {
                @if n > 0 {
                    @let h = n as f64 / max * (PLOT - 4.0);
                    @let at = { y -= h; y };
                    rect x=(x) y=(at) width=(w) height=(h) fill=(colour) {}
                }
            }
        }
        @for (i, (name, colour)) in OUTCOMES.into_iter().enumerate() {
            rect x=(LEFT + 110.0 * i as f64) y=(bottom + 22.0) width="10" height="10" fill=(colour) {}
            text x=(LEFT + 14.0 + 110.0 * i as f64) y=(bottom + 31.0) font-size="11" fill=(TEXT) { (name) }
        }
    }
}

/// Attempt durations per bucket: p95 as bars, p50 as a darker mark.
#[allow(clippy::cast_precision_loss)]
fn latency(t: &WebhookTimeline, now_ms: i64, top: f64) -> Markup {
    let axis = Axis::of(t, now_ms);
    let max = f64::from(
        axis.visible(t)
            .map(|b| b.p95_attempt_ms)
            .max()
            .unwrap_or(0)
            .max(1),
    );
    let w = (axis.slot_width() - 0.5).max(0.5);
    let bottom = top + PLOT;
    html! {
        text x="0" y=(top - 8.0) font-size="12" fill=(TEXT) {
            "Attempt duration per hour: p95 bars, p50 marks (ms; UTC)"
        }
        text x="0" y=(top + 10.0) font-size="10" fill=(TEXT) { (max) " ms" }
        text x="0" y=(bottom) font-size="10" fill=(TEXT) { "0" }
        (axis.days(top))
        @for b in axis.visible(t).filter(|b| b.attempts > 0) {
            @let x = axis.x(b.start_unix_ms);
            @let h95 = f64::from(b.p95_attempt_ms) / max * (PLOT - 4.0);
            @let h50 = f64::from(b.p50_attempt_ms) / max * (PLOT - 4.0);
            rect x=(x) y=(bottom - h95) width=(w) height=(h95) fill="#8fb0ea" {}
            rect x=(x) y=(bottom - h50 - 1.0) width=(w) height="2" fill="#1d3f8a" {}
        }
    }
}
