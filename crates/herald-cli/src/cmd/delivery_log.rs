//! The delivery log commands: `delivery`, `deliveries`, `summary`, `resend`,
//! `replay` and `test-send` (Admin's delivery log calls).
//!
//! The delivery log is the record of deliveries and their attempts that
//! ingest serves, not any process's log output. Times given on the command
//! line are turned into Unix milliseconds here; this module must never
//! decide which deliveries a replay picks (the server does).

use std::hash::{BuildHasher, Hasher};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use herald_proto::v1::{Caller, GetWebhookTimelineRequest, WebhookTimeline, WhoAmIRequest};
use herald_proto::v1::{
    Delivery, GetDeliveryRequest, GetWebhookSummaryRequest, ListDeliveriesRequest,
    ReplayFailedRequest, ResendDeliveryRequest, ResendResponse, SendTestEventRequest,
    WebhookSummary, send_test_event_request,
};
use serde_json::Value;

use crate::cli::OutputArgs;
use crate::client::{Connection, api, connect};
use crate::output::{self, format_unix_ms, one_line, print_json, table, tenant_label, to_json};

/// The delivery log commands (flattened into the top-level command list).
#[derive(Debug, Subcommand)]
pub enum DeliveryLogCommand {
    /// List deliveries, newest first, one page at a time.
    Deliveries(DeliveriesArgs),
    /// A webhook's counts, success rate and attempt durations.
    Summary(SummaryArgs),
    /// A webhook's deliveries per hour (or --bucket) by outcome, with the
    /// attempt durations of each bucket; the last 7 days unless --since.
    Timeline(TimelineArgs),
    /// Who the API key is: its scopes and the tenant it is limited to.
    Whoami {
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Send a delivery's data again as a new delivery (full retry schedule).
    Resend(ResendArgs),
    /// Resend every failed delivery of a webhook fired in a time range.
    Replay(ReplayArgs),
    /// Send test data to a webhook now (no initial delay); prints the
    /// delivery id to watch with `herald delivery ID`.
    TestSend(TestSendArgs),
}

/// A point in time: RFC 3339 (`2026-11-23T12:00:00Z`, offsets allowed) or an
/// age like `90s`, `15m`, `2h`, `7d` (that long ago).
#[derive(Debug, Args, Default, Clone)]
pub struct FromArgs {
    /// Only deliveries fired at or after this time: RFC 3339 or an age such
    /// as 2h or 7d.
    #[arg(long, value_name = "TIME", group = "from")]
    pub since: Option<String>,
    /// Same as --since, in milliseconds since 1970-01-01 UTC.
    #[arg(long, value_name = "MS", group = "from")]
    pub from_ms: Option<i64>,
    /// Only deliveries fired before this time: RFC 3339 or an age.
    #[arg(long, value_name = "TIME", group = "to")]
    pub until: Option<String>,
    /// Same as --until, in milliseconds since 1970-01-01 UTC.
    #[arg(long, value_name = "MS", group = "to")]
    pub to_ms: Option<i64>,
}

impl FromArgs {
    fn range(&self) -> anyhow::Result<(Option<i64>, Option<i64>)> {
        let from = match (&self.since, self.from_ms) {
            (Some(t), _) => Some(parse_time(t).context("--since")?),
            (None, ms) => ms,
        };
        let to = match (&self.until, self.to_ms) {
            (Some(t), _) => Some(parse_time(t).context("--until")?),
            (None, ms) => ms,
        };
        Ok((from, to))
    }
}

#[derive(Debug, Args)]
pub struct DeliveriesArgs {
    /// Only this tenant (empty string: the default tenant).
    #[arg(long)]
    pub tenant: Option<String>,
    /// Only this event.
    #[arg(long)]
    pub event: Option<String>,
    /// Only this webhook (id).
    #[arg(long, value_name = "WEBHOOK_ID")]
    pub webhook: Option<String>,
    /// Only this state: scheduled, pending, succeeded, failed or cancelled.
    #[arg(long)]
    pub state: Option<String>,
    #[command(flatten)]
    pub range: FromArgs,
    /// Page size (default 100, at most 1000).
    #[arg(long, value_name = "N")]
    pub limit: Option<u32>,
    /// Continue after a previous page (the cursor it printed).
    #[arg(long, value_name = "C")]
    pub cursor: Option<String>,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct SummaryArgs {
    /// Webhook id.
    pub webhook_id: String,
    #[command(flatten)]
    pub range: FromArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct TimelineArgs {
    /// Webhook id.
    pub webhook_id: String,
    /// Width of a bucket in seconds (at least 60).
    #[arg(long, default_value_t = 3600)]
    pub bucket: u32,
    #[command(flatten)]
    pub range: FromArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct ResendArgs {
    /// Delivery id.
    pub delivery_id: String,
    /// Makes a retried command safe: the same id never sends twice.
    /// Generated when not given.
    #[arg(long)]
    pub request_id: Option<String>,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Webhook id.
    pub webhook_id: String,
    /// Start of the range (inclusive): RFC 3339 or an age such as 2h.
    #[arg(long, value_name = "TIME")]
    pub from: String,
    /// End of the range (exclusive): RFC 3339, an age, or `now`.
    #[arg(long, value_name = "TIME")]
    pub to: String,
    /// Also the cancelled deliveries (e.g. those cancelled while the webhook
    /// was disabled).
    #[arg(long)]
    pub include_cancelled: bool,
    /// Makes a retried command safe: the same id never sends twice.
    /// Generated when not given.
    #[arg(long)]
    pub request_id: Option<String>,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct TestSendArgs {
    /// Webhook id.
    pub webhook_id: String,
    /// The test data as a JSON document (here `--json` is the data; for JSON
    /// output write `herald --json test-send ...`).
    #[arg(long = "json", value_name = "DOC", group = "test_data")]
    pub data: Option<String>,
    /// The test data as plain text.
    #[arg(long, value_name = "TEXT", group = "test_data")]
    pub text: Option<String>,
}

impl DeliveryLogCommand {
    pub fn output(&self) -> OutputArgs {
        match self {
            Self::Deliveries(a) => a.output,
            Self::Summary(a) => a.output,
            Self::Timeline(a) => a.output,
            Self::Whoami { output } => *output,
            Self::Resend(a) => a.output,
            Self::Replay(a) => a.output,
            Self::TestSend(_) => OutputArgs::default(),
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A fresh request id: a random (version 4) UUID.
pub fn new_request_id() -> String {
    let mut bytes = [0_u8; 16];
    // RandomState is seeded from the OS's random source once per process
    // and then per instance; two hashes give 128 random-looking bits.
    for (i, chunk) in bytes.chunks_mut(8).enumerate() {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u128(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        hasher.write_usize(i);
        hasher.write_u32(std::process::id());
        chunk.copy_from_slice(&hasher.finish().to_le_bytes());
    }
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Parses RFC 3339 (`2026-11-23T12:00:00Z`, `2026-11-23 12:00:00.5+01:00`),
/// `now`, or an age (`90s`, `15m`, `2h`, `7d`: that long before now), to
/// milliseconds since the epoch.
pub fn parse_time(text: &str) -> anyhow::Result<i64> {
    parse_time_at(text, now_ms())
}

fn parse_time_at(text: &str, now: i64) -> anyhow::Result<i64> {
    let text = text.trim();
    if text == "now" {
        return Ok(now);
    }
    if let Some(unit) = text.chars().last().filter(char::is_ascii_alphabetic)
        && let Ok(n) = text[..text.len() - 1].parse::<i64>()
    {
        let unit_ms = match unit {
            's' => 1_000,
            'm' => 60_000,
            'h' => 3_600_000,
            'd' => 86_400_000,
            _ => bail!("{text:?}: an age ends in s, m, h or d (e.g. 2h)"),
        };
        return Ok(now - n.saturating_mul(unit_ms));
    }
    parse_rfc3339(text).with_context(|| {
        format!("{text:?} is neither RFC 3339 (2026-11-23T12:00:00Z) nor an age (2h, 7d)")
    })
}

fn parse_rfc3339(text: &str) -> anyhow::Result<i64> {
    let at = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)?;
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).context("time out of range")
}

pub fn deliveries_table(deliveries: &[Delivery]) -> String {
    let rows: Vec<Vec<String>> = deliveries
        .iter()
        .map(|d| {
            let result = match (d.last_status_code, d.last_error.is_empty()) {
                (Some(code), true) => code.to_string(),
                (_, false) => one_line(&d.last_error, 40),
                (None, true) => "-".to_owned(),
            };
            vec![
                d.id.clone(),
                format_unix_ms(d.fired_at_unix_ms),
                tenant_label(&d.tenant),
                d.event.clone(),
                d.state.clone(),
                d.attempts.to_string(),
                result,
            ]
        })
        .collect();
    table(
        &[
            "ID", "FIRED", "TENANT", "EVENT", "STATE", "ATTEMPTS", "LAST",
        ],
        &rows,
    )
}

pub fn summary_text(s: &WebhookSummary) -> String {
    let finished = s.succeeded + s.failed;
    let rate = if finished == 0 {
        "-".to_owned()
    } else {
        format!("{:.1}%", s.success_rate * 100.0)
    };
    let rows = [
        ("webhook", s.webhook_id.clone()),
        ("fired", s.fired.to_string()),
        ("succeeded", s.succeeded.to_string()),
        ("failed", s.failed.to_string()),
        ("scheduled", s.scheduled.to_string()),
        ("pending", s.pending.to_string()),
        ("cancelled", s.cancelled.to_string()),
        ("success rate", rate),
        ("attempt p50", format!("{} ms", s.p50_attempt_ms)),
        ("attempt p95", format!("{} ms", s.p95_attempt_ms)),
    ];
    rows.iter()
        .map(|(k, v)| format!("{k:<12}  {v}\n"))
        .collect()
}

pub fn timeline_table(t: &WebhookTimeline) -> String {
    let rows: Vec<Vec<String>> = t
        .buckets
        .iter()
        .map(|b| {
            vec![
                format_unix_ms(b.start_unix_ms),
                b.fired.to_string(),
                b.succeeded.to_string(),
                b.failed.to_string(),
                (b.pending + b.scheduled).to_string(),
                b.cancelled.to_string(),
                b.attempts.to_string(),
                format!("{} ms", b.p95_attempt_ms),
            ]
        })
        .collect();
    table(
        &[
            "BUCKET",
            "FIRED",
            "SUCCEEDED",
            "FAILED",
            "PENDING",
            "CANCELLED",
            "ATTEMPTS",
            "P95",
        ],
        &rows,
    )
}

pub fn caller_text(c: &Caller) -> String {
    let rows = [
        ("kind", c.kind.clone()),
        ("key", or_dash(&c.key_id)),
        ("name", or_dash(&c.name)),
        ("prefix", or_dash(&c.token_prefix)),
        ("scopes", c.scopes.join(", ")),
        (
            "tenant",
            c.tenant
                .as_deref()
                .map_or_else(|| "every tenant".to_owned(), tenant_label),
        ),
    ];
    rows.iter().map(|(k, v)| format!("{k:<7}  {v}\n")).collect()
}

fn or_dash(text: &str) -> String {
    if text.is_empty() {
        "-".to_owned()
    } else {
        text.to_owned()
    }
}

fn print_ids(json: bool, answer: &ResendResponse, request_id: &str) {
    if json {
        // The request id is the CLI's (generated unless given), not part
        // of the answer; printed so that a script can repeat the call.
        let mut value = to_json(answer);
        if let Value::Object(map) = &mut value {
            map.insert("request_id".into(), request_id.into());
        }
        print_json(&value);
    } else {
        for id in &answer.delivery_ids {
            println!("{id}");
        }
        eprintln!(
            "{} deliver{} queued (request id {request_id}; repeating it sends nothing again)",
            answer.delivery_ids.len(),
            if answer.delivery_ids.len() == 1 {
                "y"
            } else {
                "ies"
            }
        );
    }
}

/// `herald delivery ID`: one delivery with its attempts.
pub async fn show(conn: &Connection, json: bool, id: String) -> anyhow::Result<()> {
    let mut c = connect(conn).await?;
    let delivery = api(c.admin.get_delivery(GetDeliveryRequest { id }).await)?;
    if json {
        print_json(&delivery);
    } else {
        print!("{}", output::delivery_details(&delivery));
    }
    Ok(())
}

/// Runs one of the delivery log commands.
pub async fn run(
    server: &Connection,
    json: bool,
    command: DeliveryLogCommand,
) -> anyhow::Result<()> {
    match command {
        DeliveryLogCommand::Deliveries(args) => {
            let (from_unix_ms, to_unix_ms) = args.range.range()?;
            let request = ListDeliveriesRequest {
                tenant: args.tenant,
                event: args.event,
                webhook_id: args.webhook,
                state: args.state,
                from_unix_ms,
                to_unix_ms,
                page_size: args.limit.unwrap_or(0),
                cursor: args.cursor.unwrap_or_default(),
            };
            let mut c = connect(server).await?;
            let answer = api(c.admin.list_deliveries(request).await)?;
            if json {
                print_json(&answer);
            } else {
                if answer.deliveries.is_empty() {
                    eprintln!("no deliveries match");
                } else {
                    print!("{}", deliveries_table(&answer.deliveries));
                }
                if !answer.next_cursor.is_empty() {
                    eprintln!("more: add --cursor {}", answer.next_cursor);
                }
            }
        }
        DeliveryLogCommand::Summary(args) => {
            let (from_unix_ms, to_unix_ms) = args.range.range()?;
            let mut c = connect(server).await?;
            let answer = api(c
                .admin
                .get_webhook_summary(GetWebhookSummaryRequest {
                    webhook_id: args.webhook_id,
                    from_unix_ms,
                    to_unix_ms,
                })
                .await)?;
            if json {
                print_json(&answer);
            } else {
                print!("{}", summary_text(&answer));
            }
        }
        DeliveryLogCommand::Timeline(args) => {
            let (from_unix_ms, to_unix_ms) = args.range.range()?;
            let mut c = connect(server).await?;
            let answer = api(c
                .admin
                .get_webhook_timeline(GetWebhookTimelineRequest {
                    webhook_id: args.webhook_id,
                    from_unix_ms,
                    to_unix_ms,
                    bucket_seconds: args.bucket,
                })
                .await)?;
            if json {
                print_json(&answer);
            } else if answer.buckets.is_empty() {
                eprintln!("no deliveries in the range");
            } else {
                print!("{}", timeline_table(&answer));
            }
        }
        DeliveryLogCommand::Whoami { .. } => {
            let mut c = connect(server).await?;
            let answer = api(c.admin.who_am_i(WhoAmIRequest {}).await)?;
            if json {
                print_json(&answer);
            } else {
                print!("{}", caller_text(&answer));
            }
        }
        DeliveryLogCommand::Resend(args) => {
            let request_id = args.request_id.unwrap_or_else(new_request_id);
            let mut c = connect(server).await?;
            let answer = api(c
                .admin
                .resend_delivery(ResendDeliveryRequest {
                    id: args.delivery_id,
                    request_id: request_id.clone(),
                })
                .await)?;
            print_ids(json, &answer, &request_id);
        }
        DeliveryLogCommand::Replay(args) => {
            let from_unix_ms = parse_time(&args.from).context("--from")?;
            let to_unix_ms = parse_time(&args.to).context("--to")?;
            let request_id = args.request_id.unwrap_or_else(new_request_id);
            let mut c = connect(server).await?;
            let answer = api(c
                .admin
                .replay_failed(ReplayFailedRequest {
                    webhook_id: args.webhook_id,
                    from_unix_ms: Some(from_unix_ms),
                    to_unix_ms: Some(to_unix_ms),
                    request_id: request_id.clone(),
                    include_cancelled: args.include_cancelled,
                })
                .await)?;
            print_ids(json, &answer, &request_id);
        }
        DeliveryLogCommand::TestSend(args) => {
            let data = match (args.data, args.text) {
                (Some(doc), _) => Some(send_test_event_request::Data::Json(doc)),
                (None, Some(text)) => Some(send_test_event_request::Data::Text(text)),
                (None, None) => Some(send_test_event_request::Data::Json(
                    r#"{"test":true}"#.to_owned(),
                )),
            };
            let mut c = connect(server).await?;
            let answer = api(c
                .admin
                .send_test_event(SendTestEventRequest {
                    webhook_id: args.webhook_id,
                    data,
                })
                .await)?;
            if json {
                print_json(&answer);
            } else {
                for id in &answer.delivery_ids {
                    println!("{id}");
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse() {
        assert_eq!(parse_time_at("1970-01-01T00:00:00Z", 0).unwrap(), 0);
        assert_eq!(
            parse_time_at("2026-11-23T12:00:00.123Z", 0).unwrap(),
            1_795_435_200_123
        );
        assert_eq!(
            parse_time_at("2026-11-23T13:00:00+01:00", 0).unwrap(),
            1_795_435_200_000
        );
        assert_eq!(
            format_unix_ms(parse_time_at("2024-02-29 23:59:59.5-00:30", 0).unwrap()),
            "2024-03-01T00:29:59.500Z"
        );
        assert_eq!(parse_time_at("2h", 10_000_000).unwrap(), 2_800_000);
        assert_eq!(parse_time_at("7d", 0).unwrap(), -604_800_000);
        assert_eq!(parse_time_at("now", 42).unwrap(), 42);
        for bad in ["", "yesterday", "2026-11-23", "2026-11-23T12:00:00", "5w"] {
            assert!(parse_time_at(bad, 0).is_err(), "{bad}");
        }
    }

    #[test]
    fn request_ids_are_v4_uuids() {
        let a = new_request_id();
        let b = new_request_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
    }
}
