//! `cargo run --release -p herald-bench`: raw baselines and the Herald
//! pipeline in one run; prints a table and writes
//! `crates/herald-bench/results/<date>.json`.

#![allow(clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use clap::Parser;
use herald_bench::baseline::{self, Stage};
use herald_bench::herald::{self, CaseSpec, Door, Env, Load};
use herald_bench::procfs;
use herald_bench::receiver::Receiver;
use herald_bench::report::{self, Machine, Report};
use herald_proto::v1::DeliveryMessage;
use herald_queue::QueueType;
use tokio_postgres::NoTls;
use uuid::Uuid;

/// A JSON body like an order event (about 300 bytes).
const PAYLOAD: &str = r#"{"order_id":1234567,"shop":"bench","customer":{"id":98765,"email":"jane.doe@example.com"},"currency":"EUR","total":"149.90","items":[{"sku":"SKU-0001","qty":2,"price":"49.95"},{"sku":"SKU-0002","qty":1,"price":"50.00"}],"shipping":{"method":"dhl","country":"DE"},"created_at":"2026-11-23T12:00:00Z"}"#;

/// Herald's schedule in the bench: the first attempt at once, retries soon.
const SCHEDULE: &str = "0s,1s,1s";

#[derive(Debug, Parser)]
#[command(
    name = "herald-bench",
    about = "Benchmark Herald against this machine's raw limits"
)]
struct Cli {
    /// Queue type of Herald and of the AMQP baselines. Herald's default is
    /// quorum; classic is for single-node development brokers (see
    /// docs/reliability.md), measured here to show what the queue type costs.
    #[arg(long, default_value = "quorum")]
    queue_type: QueueType,
    /// Events of the main closed-loop case (1 webhook).
    #[arg(long, default_value_t = 20_000)]
    events: usize,
    /// Events of the linearity case (1 webhook); 0 skips it.
    #[arg(long, default_value_t = 100_000)]
    big_events: usize,
    /// Events of the fan-out case (5 webhooks each).
    #[arg(long, default_value_t = 4_000)]
    fanout_events: usize,
    /// Fire concurrency of the closed-loop cases and the baselines.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Fires per second of the open-loop case.
    #[arg(long, default_value_t = 1_000.0)]
    rate: f64,
    /// Duration of the open-loop case, seconds.
    #[arg(long, default_value_t = 10)]
    rate_secs: u64,
    /// Deliveries of each backlog case.
    #[arg(long, default_value_t = 10_000)]
    backlog: usize,
    /// Messages/requests of the AMQP, HTTP and tonic baselines.
    #[arg(long, default_value_t = 50_000)]
    baseline_count: usize,
    /// Rows of the Postgres baseline.
    #[arg(long, default_value_t = 200_000)]
    baseline_rows: usize,
    /// AMQP channels ingest publishes on (`HERALD_PUBLISH_CHANNELS`);
    /// default: ingest's own default.
    #[arg(long)]
    publish_channels: Option<u16>,
    /// Run only the Herald cases whose name contains this; repeat it for
    /// more (`--cases 'Fire only' --cases backlog`). Names hold commas, so
    /// there is no list syntax. The raw baselines always run.
    #[arg(long)]
    cases: Vec<String>,
    /// Do not build herald-ingest and herald-sender (use the binaries in --bin-dir).
    #[arg(long)]
    no_build: bool,
    /// Where the release binaries are; default: target/release of the workspace.
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Postgres server (its database is only used to create and drop the bench one).
    #[arg(
        long,
        env = "HERALD_BENCH_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    postgres_url: String,
    #[arg(
        long,
        env = "HERALD_BENCH_AMQP_URL",
        default_value = herald_queue::DEFAULT_AMQP_URL
    )]
    amqp_url: String,
    /// Where the JSON goes; default: crates/herald-bench/results.
    #[arg(long)]
    output_dir: Option<PathBuf>,
    /// Runs the whole bench this many times, one process after the other,
    /// each writing its JSON to `<date>-runs/run-<i>/` of the output
    /// directory, then prints issue 23's cost figures over the runs (their
    /// medians) and writes them to `<date>-runs/summary.json`.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    runs: u16,
    /// Run only the console case: Herald Console's pages over
    /// --console-rows deliveries of one webhook (server time per page and
    /// the plans of the queries behind them); written to
    /// `<date>-console.json`.
    #[arg(long)]
    console: bool,
    /// Deliveries the console case writes for its webhook.
    #[arg(long, default_value_t = 1_000_000)]
    console_rows: usize,
    /// Run only the protection cases of issue 19 (docs/protection.md): the
    /// circuit breaker (five webhooks, one sender, all healthy and then one
    /// answering 503) and the rate limit (a backlog of one webhook limited
    /// to --protection-rate, two senders); written to
    /// `<date>-protection.json`.
    #[arg(long)]
    protection: bool,
    /// Events of each circuit-breaker run (five deliveries each); the
    /// default makes a run last 10 to 20 s on a 2-core machine, so that the
    /// down webhook's parked deliveries come back a few times meanwhile.
    #[arg(long, default_value_t = 15_000)]
    protection_events: usize,
    /// Deliveries of the rate-limit case's backlog.
    #[arg(long, default_value_t = 4_000)]
    protection_backlog: usize,
    /// Times each protection case runs (the breaker's healthy and one-down
    /// runs alternate); the targets judge the median, as the machine's
    /// noise moves a single run by 10 % and more.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..))]
    protection_repeats: u16,
    /// Requests per second of the rate-limit case's webhook.
    #[arg(long, default_value_t = 200)]
    protection_rate: u32,
    /// Export traces from ingest and the senders (OTLP/gRPC) to a sink in
    /// this process, to measure what tracing costs; off by default, as in
    /// Herald.
    #[arg(long)]
    otlp: bool,
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|_| PathBuf::from("."))
}

async fn pg(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .context("connecting to Postgres")?;
    tokio::spawn(connection);
    Ok(client)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let began = Instant::now();
    let workspace = workspace();
    let bin_dir = cli
        .bin_dir
        .clone()
        .unwrap_or_else(|| workspace.join("target/release"));
    if !cli.no_build {
        println!("building herald-ingest and herald-sender (release)…");
        herald::build_binaries(&workspace, &bin_dir)?;
    }
    if cli.runs > 1 && !cli.console && !cli.protection {
        let dir = cli
            .output_dir
            .clone()
            .unwrap_or_else(|| workspace.join("crates/herald-bench/results"));
        return repeat_runs(cli.runs, &bin_dir, &dir);
    }
    let run_id = Uuid::new_v4().simple().to_string();
    let db_name = format!("herald_bench_{run_id}");
    let log_dir = std::env::temp_dir().join(format!("herald-bench-{run_id}"));
    std::fs::create_dir_all(&log_dir)?;
    let admin = pg(&cli.postgres_url).await?;
    remove_abandoned_runs(&admin, &cli).await;
    admin
        .batch_execute(&format!("CREATE DATABASE {db_name}"))
        .await
        .context("creating the bench database")?;
    let sink = match cli.otlp {
        true => Some(herald_bench::otlp_sink::OtlpSink::start().await?),
        false => None,
    };
    let env = Env {
        bin_dir,
        log_dir: log_dir.clone(),
        database_url: herald_store::with_database(&cli.postgres_url, &db_name),
        amqp_url: cli.amqp_url.clone(),
        prefix: format!("herald_bench_{run_id}"),
        schedule: SCHEDULE.into(),
        queue_type: cli.queue_type,
        publish_channels: cli.publish_channels,
        otel_endpoint: sink
            .as_ref()
            .map(herald_bench::otlp_sink::OtlpSink::endpoint),
    };
    println!(
        "database {db_name}, queue prefix {}, process logs in {}",
        env.prefix,
        log_dir.display()
    );
    if cli.console {
        let result = tokio::select! {
            result = console_case(&cli, &env) => result,
            signal = interrupted() => Err(anyhow::anyhow!("interrupted by {signal}")),
        };
        let _ = delete_queues(&env).await;
        let _ = admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {db_name} WITH (FORCE)"))
            .await;
        let result = result?;
        println!("\n{}", herald_bench::console::render(&result));
        let dir = cli
            .output_dir
            .clone()
            .unwrap_or_else(|| workspace.join("crates/herald-bench/results"));
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!(
            "{}-console.json",
            report::civil_date(SystemTime::now())
        ));
        std::fs::write(&path, serde_json::to_string_pretty(&result)? + "\n")?;
        println!("results written to {}", path.display());
        let _ = std::fs::remove_dir_all(&log_dir);
        return Ok(());
    }
    if cli.protection {
        let result = tokio::select! {
            result = protection_case(&cli, &env, &admin, began) => result,
            signal = interrupted() => Err(anyhow::anyhow!("interrupted by {signal}")),
        };
        // Each run cleans up after itself; this is for a run that failed or
        // was interrupted half-way. Removing what is gone already is harmless.
        for tag in protection_tags(cli.protection_repeats) {
            let (sub, name) = protection_env(&cli, &env, &tag);
            let _ = delete_queues(&sub).await;
            let _ = admin
                .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await;
        }
        let _ = delete_queues(&env).await;
        let _ = admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {db_name} WITH (FORCE)"))
            .await;
        let result = result?;
        println!("\n{}", herald_bench::protection::render(&result));
        let dir = cli
            .output_dir
            .clone()
            .unwrap_or_else(|| workspace.join("crates/herald-bench/results"));
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{}-protection.json", result.date));
        std::fs::write(&path, serde_json::to_string_pretty(&result)? + "\n")?;
        println!("results written to {}", path.display());
        let _ = std::fs::remove_dir_all(&log_dir);
        return Ok(());
    }
    let mut machine = Machine::probe();
    // Interrupted, the run's processes are killed (dropping them does) and
    // its database and queues are removed below like after a normal end.
    let result = tokio::select! {
        result = run(&cli, &env) => result,
        signal = interrupted() => Err(anyhow::anyhow!("interrupted by {signal}")),
    };

    // Clean up whatever happened.
    let _ = delete_queues(&env).await;
    let _ = admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {db_name} WITH (FORCE)"))
        .await;
    let (baselines, ingest_idle_rss_mib, cases) = result?;
    machine.load_average_end = procfs::load_average();

    let ratios = report::ratios(&baselines, &cases);
    let targets = report::targets(
        &baselines,
        &cases,
        &ratios,
        ingest_idle_rss_mib,
        machine.cpus,
    );
    let cost_figures = report::cost_figures(&baselines, &cases, machine.cpus);
    let date = report::civil_date(SystemTime::now());
    let report = Report {
        date: date.clone(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        machine,
        baselines,
        ingest_idle_rss_mib,
        cases,
        ratios,
        targets,
        cost_figures,
        duration_s: began.elapsed().as_secs_f64(),
        otlp_spans: sink.as_ref().map(herald_bench::otlp_sink::OtlpSink::spans),
    };
    println!("\n{}", report::render(&report));
    if let Some(spans) = report.otlp_spans {
        println!("traces on (--otlp): the services exported {spans} spans");
    }
    let dir = cli
        .output_dir
        .clone()
        .unwrap_or_else(|| workspace.join("crates/herald-bench/results"));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{date}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(&report)? + "\n")?;
    println!("results written to {}", path.display());
    let _ = std::fs::remove_dir_all(&log_dir);
    Ok(())
}

/// The console case alone: ingest as a process, the rows, the console.
async fn console_case(
    cli: &Cli,
    env: &Env,
) -> anyhow::Result<herald_bench::console::ConsoleResult> {
    herald_store::migrate(&env.database_url)
        .await
        .context("migrating the bench database")?;
    let db = pg(&env.database_url).await?;
    let mut ingest = herald::start_ingest(env).await?;
    let result = herald_bench::console::run(env, &mut ingest, &db, cli.console_rows).await;
    ingest.proc.stop(Duration::from_secs(15)).await;
    result
}

/// `--runs N`: this bench again, N times in a row as child processes with
/// the same options (binaries built once), then issue 23's figures over
/// the runs. A child that fails stops the series: a median over the runs
/// that happened to work would flatter.
fn repeat_runs(runs: u16, bin_dir: &Path, dir: &Path) -> anyhow::Result<()> {
    let series = dir.join(format!("{}-runs", report::civil_date(SystemTime::now())));
    let mut args: Vec<String> = Vec::new();
    let mut given = std::env::args().skip(1);
    while let Some(arg) = given.next() {
        match arg.as_str() {
            "--runs" | "--output-dir" | "--bin-dir" => {
                given.next();
            }
            "--no-build" => {}
            _ if arg.starts_with("--runs=")
                || arg.starts_with("--output-dir=")
                || arg.starts_with("--bin-dir=") => {}
            _ => args.push(arg),
        }
    }
    let mut figures = Vec::new();
    for i in 1..=runs {
        let out = series.join(format!("run-{i}"));
        std::fs::create_dir_all(&out)?;
        println!("\n=== run {i} of {runs}: results in {}", out.display());
        let status = std::process::Command::new(std::env::current_exe()?)
            .args(&args)
            .arg("--no-build")
            .arg("--bin-dir")
            .arg(bin_dir)
            .arg("--output-dir")
            .arg(&out)
            .status()
            .context("starting a run of the bench")?;
        anyhow::ensure!(status.success(), "run {i} of {runs} failed: {status}");
        let json = std::fs::read_dir(&out)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "json"))
            .with_context(|| format!("run {i} wrote no JSON to {}", out.display()))?;
        let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json)?)?;
        let run: Vec<report::CostFigure> =
            serde_json::from_value(report["cost_figures"].clone())
                .with_context(|| format!("reading cost_figures of {}", json.display()))?;
        figures.push(run);
    }
    let summary = herald_bench::runs::summarize(&figures);
    println!("\n{}", herald_bench::runs::render(&summary, figures.len()));
    let path = series.join("summary.json");
    std::fs::write(&path, serde_json::to_string_pretty(&summary)? + "\n")?;
    println!("summary written to {}", path.display());
    Ok(())
}

/// The protection case's runs, `repeats` of each; each gets a database and
/// queue prefix of its own, named after the bench run's with the tag
/// appended.
fn protection_tags(repeats: u16) -> Vec<String> {
    (1..=repeats)
        .flat_map(|i| ["healthy", "one_down", "limited"].map(|kind| format!("{kind}{i}")))
        .collect()
}

/// The environment of one protection run: the bench run's, with a database,
/// queue prefix and log directory of its own. The down webhook's parked
/// deliveries keep circulating through its delay queues until those are
/// deleted, and must not reach a later run's sender.
fn protection_env(cli: &Cli, env: &Env, tag: &str) -> (Env, String) {
    let name = format!("{}_{tag}", env.prefix);
    let sub = Env {
        log_dir: env.log_dir.join(tag),
        database_url: herald_store::with_database(&cli.postgres_url, &name),
        prefix: name.clone(),
        ..env.clone()
    };
    (sub, name)
}

/// The protection cases alone (`--protection`).
async fn protection_case(
    cli: &Cli,
    env: &Env,
    admin: &tokio_postgres::Client,
    began: Instant,
) -> anyhow::Result<herald_bench::protection::ProtectionResult> {
    use herald_bench::protection::{self, BreakerCase, ProtectionResult};
    let mut machine = Machine::probe();
    let events = cli.protection_events;
    let c = cli.concurrency;
    let prepare = async |tag: &str| {
        let (sub, name) = protection_env(cli, env, tag);
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .with_context(|| format!("creating the database of the {tag} run"))?;
        herald_store::migrate(&sub.database_url)
            .await
            .with_context(|| format!("migrating the database of the {tag} run"))?;
        std::fs::create_dir_all(&sub.log_dir)?;
        anyhow::Ok((sub, name))
    };
    let finish = async |sub: &Env, name: &str| {
        let _ = delete_queues(sub).await;
        let _ = admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await;
    };
    // Generous: a healthy run takes 10 to 20 s on the 2-core machine.
    let timeout = Duration::from_secs(60 + (events * protection::BREAKER_WEBHOOKS / 200) as u64);

    // One breaker run in a database and queue prefix of its own.
    let breaker = async |tag: String, label: &str, down: bool| {
        let (sub, name) = prepare(&tag).await?;
        let run = protection::breaker_run(&sub, label, down, events, c, PAYLOAD, timeout).await;
        finish(&sub, &name).await;
        run
    };
    let repeats = cli.protection_repeats;
    let mut pairs = Vec::new();
    for i in 1..=repeats {
        println!(
            "circuit breaker {i}/{repeats}: {} webhooks, 1 sender, {events} events, all healthy…",
            protection::BREAKER_WEBHOOKS
        );
        let healthy = breaker(format!("healthy{i}"), "all healthy", false).await?;
        println!(
            "    {:.0} deliveries/s per webhook; all done in {:.1} s",
            healthy.healthy_per_webhook_per_s, healthy.healthy_done_s
        );

        println!(
            "circuit breaker {i}/{repeats}: the same with one webhook's receiver answering 503…"
        );
        let one_down = breaker(format!("one_down{i}"), "one down", true).await?;
        println!(
            "    {:.0} deliveries/s per healthy webhook; the four done in {:.1} s; the down path got {} requests",
            one_down.healthy_per_webhook_per_s,
            one_down.healthy_done_s,
            one_down.down_requests.unwrap_or(0)
        );
        pairs.push(protection::BreakerPair::new(healthy, one_down));
    }

    let rate = cli.protection_rate;
    let backlog = cli.protection_backlog;
    // The limit makes the drain last backlog / rate seconds; twice that
    // and a minute for start-up is ample.
    let limited_timeout = Duration::from_secs(60 + 2 * (backlog as u64) / u64::from(rate.max(1)));
    let mut limits = Vec::new();
    for i in 1..=repeats {
        println!(
            "rate limit {i}/{repeats}: one webhook at {rate}/s, a backlog of {backlog}, 2 senders…"
        );
        let (sub, name) = prepare(&format!("limited{i}")).await?;
        let limited =
            protection::rate_limit_run(&sub, backlog, rate, 2, c, PAYLOAD, limited_timeout).await;
        finish(&sub, &name).await;
        let limited = limited?;
        println!(
            "    {} in {:.1} s, {:.1}/s; busiest 1 s {}, 10 s {}",
            limited.delivered,
            limited.drain_s,
            limited.deliveries_per_s,
            limited.busiest_1s,
            limited.busiest_10s
        );
        limits.push(limited);
    }

    machine.load_average_end = procfs::load_average();
    let breaker = BreakerCase::new(pairs);
    let targets = protection::targets(&breaker, &limits);
    Ok(ProtectionResult {
        date: report::civil_date(SystemTime::now()),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        machine,
        breaker,
        rate_limits: limits,
        targets,
        duration_s: began.elapsed().as_secs_f64(),
    })
}

type Outcome = (Vec<baseline::Stage>, f64, Vec<herald::CaseResult>);

async fn run(cli: &Cli, env: &Env) -> anyhow::Result<Outcome> {
    herald_store::migrate(&env.database_url)
        .await
        .context("migrating the bench database")?;
    let c = cli.concurrency;

    // The queue message Herald publishes for one delivery of PAYLOAD.
    // `..default()`: the message grows fields while others work on it.
    #[allow(clippy::needless_update)]
    let message = DeliveryMessage {
        delivery_id: Uuid::now_v7().as_bytes().to_vec(),
        tenant: String::new(),
        event: "bench.one".into(),
        webhook_id: Uuid::new_v4().as_bytes().to_vec(),
        attempt: 1,
        fired_at_unix_ms: 1_795_392_000_000,
        data: Some(herald_proto::v1::delivery_message::Data::Json(
            PAYLOAD.into(),
        )),
        url: "http://127.0.0.1:40000/hooks/bench.one/0".into(),
        method: "POST".into(),
        ..DeliveryMessage::default()
    };
    let body = herald_queue::encode(&message);

    println!("raw baselines…");
    let raw_queue = format!("{}.raw", env.prefix);
    let n = cli.baseline_count;
    // Every publish run leaves its messages in the queue; consuming them
    // deletes it, so each run starts from an empty queue.
    let publish_then_consume = async |count: usize, load: Load, channels: usize| {
        let published = Stage::measured(baseline::publish(
            &env.amqp_url,
            &raw_queue,
            count,
            load,
            channels,
            env.queue_type,
            body.clone(),
        ))
        .await?;
        let consumed = Stage::measured(baseline::consume(
            &env.amqp_url,
            &raw_queue,
            count,
            herald_queue::DEFAULT_PREFETCH,
            env.queue_type,
        ))
        .await?;
        anyhow::Ok((published, consumed))
    };
    let closed = Load::Closed { concurrency: c };
    let (publish_ch4, consume) = publish_then_consume(n, closed, 4).await?;
    // The consume figure of the first run only: the others repeat it. The
    // publish bound is the best of the channel layouts, whichever ingest
    // uses: one channel (the fastest here), four, one per caller.
    let (publish_ch1, _) = publish_then_consume(n, closed, 1).await?;
    let (publish_per_caller, _) = publish_then_consume(n, closed, c).await?;
    // The broker's confirm latency at the open-loop case's rate, what the
    // open-loop Fire latency is bounded by.
    let open = Load::Open { rate: cli.rate };
    // On ingest's channel layout (one channel unless --publish-channels).
    let ingest_channels = cli.publish_channels.map_or(1, usize::from);
    let (confirm_open, _) =
        publish_then_consume((cli.rate * 5.0) as usize, open, ingest_channels).await?;
    // The layout the Fire target compares with (the fastest), measured
    // again right before and after the Fire-only case (see below).
    let best_layout = [
        (1, &publish_ch1),
        (4, &publish_ch4),
        (c, &publish_per_caller),
    ]
    .into_iter()
    .max_by(|a, b| a.1.per_second.total_cmp(&b.1.per_second))
    .map_or(1, |(channels, _)| channels);
    let mut stages = vec![
        publish_ch1,
        publish_ch4,
        consume,
        publish_per_caller,
        confirm_open,
    ];
    stages.push(
        Stage::measured(baseline::http(
            n,
            c,
            bytes::Bytes::from_static(PAYLOAD.as_bytes()),
        ))
        .await?,
    );
    stages.push(
        Stage::measured(baseline::postgres_insert(
            &env.database_url,
            cli.baseline_rows,
            500,
            4,
        ))
        .await?,
    );
    stages.push(Stage::measured(baseline::tonic_noop(n, c, PAYLOAD)).await?);
    for s in &stages {
        println!(
            "  {:<28} {:>9.0}/s  {:.4} CPU ms each",
            s.name, s.per_second, s.cpu_ms_per_op
        );
    }

    println!("Herald…");
    let receiver = Receiver::start().await?;
    let mut ingest = herald::start_ingest(env).await?;
    herald::create_webhooks(&mut ingest, "bench.one", 1, receiver.addr).await?;
    herald::create_webhooks(&mut ingest, "bench.five", 5, receiver.addr).await?;
    herald::create_ordered_webhook(&mut ingest, "bench.ordered", receiver.addr).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ingest_idle_rss = procfs::vm_mib(ingest.proc.pid(), "VmRSS").unwrap_or(0.0);
    let db = pg(&env.database_url).await?;

    let closed = Load::Closed { concurrency: c };
    let mut specs = vec![
        // Fire alone, as the raw publish baseline publishes alone: the
        // figure the Fire target compares with it.
        spec(
            "Fire only, c=32, 20k",
            "bench.one",
            1,
            cli.events,
            closed,
            0,
        ),
        // The same through the JSON door, right after it: the issue 22
        // target compares the two in the same minute.
        CaseSpec {
            door: Door::Json,
            ..spec(
                "Fire only over JSON, c=32, 20k",
                "bench.one",
                1,
                cli.events,
                closed,
                0,
            )
        },
        // Fire of the same event with 1,000 more webhooks configured (200
        // events, 100 patterns), then Fire alone again: issue 20's target
        // compares the middle one with the mean of the two around it.
        CaseSpec {
            crowd: true,
            ..spec(
                "Fire only among 1,000 webhooks, c=32, 20k",
                "bench.one",
                1,
                cli.events,
                closed,
                0,
            )
        },
        spec(
            "Fire only again, c=32, 20k",
            "bench.one",
            1,
            cli.events,
            closed,
            0,
        ),
        spec(
            "1 webhook, c=32, 20k",
            "bench.one",
            1,
            cli.events,
            closed,
            1,
        ),
        spec(
            "5 webhooks, c=32",
            "bench.five",
            5,
            cli.fanout_events,
            closed,
            1,
        ),
    ];
    if cli.big_events > 0 {
        specs.push(spec(
            "1 webhook, c=32, 100k",
            "bench.one",
            1,
            cli.big_events,
            closed,
            1,
        ));
    }
    specs.push(spec(
        "1 webhook, open loop 1000/s",
        "bench.one",
        1,
        (cli.rate * cli.rate_secs as f64) as usize,
        Load::Open { rate: cli.rate },
        1,
    ));
    for senders in [1, 2] {
        let mut s = spec(
            if senders == 1 {
                "backlog 10k, 1 sender"
            } else {
                "backlog 10k, 2 senders"
            },
            "bench.one",
            1,
            cli.backlog,
            closed,
            senders,
        );
        s.backlog = true;
        specs.push(s);
    }
    // Issue 20's ordered delivery, drained like the backlog above (its
    // ratio to the unordered drain is in the report): spread over 1,000
    // keys, and all on one key (one delivery at a time, so a tenth of the
    // events).
    for (name, keys, events) in [
        (
            "ordered backlog 10k, 1,000 keys, 1 sender",
            1_000,
            cli.backlog,
        ),
        ("ordered backlog 1k, 1 key, 1 sender", 1, cli.backlog / 10),
    ] {
        let mut s = spec(name, "bench.ordered", 1, events, closed, 1);
        s.backlog = true;
        s.ordering_keys = Some(keys);
        specs.push(s);
    }
    // The memory target's case: the whole backlog in flight in one sender
    // (prefetch = backlog), most of it waiting for the webhook's in-flight
    // limit.
    let mut all_in_flight = spec(
        "backlog 10k, 1 sender, all in flight",
        "bench.one",
        1,
        cli.backlog,
        closed,
        1,
    );
    all_in_flight.backlog = true;
    all_in_flight.prefetch = Some(u16::try_from(cli.backlog).unwrap_or(u16::MAX));
    specs.push(all_in_flight);
    if !cli.cases.is_empty() {
        specs.retain(|s| cli.cases.iter().any(|c| s.name.contains(c.as_str())));
    }
    let mut cases = Vec::new();
    for s in specs {
        println!("  {} ({} events)…", s.name, s.events);
        let timeout = Duration::from_secs(60 + (s.events * s.webhooks / 500) as u64);
        // The other Fire-only cases (JSON door, the crowd, again) are
        // compared with this one, not with the raw publish, so only this
        // one is bracketed.
        let fire_only = s.fire_only() && s.name == "Fire only, c=32, 20k";
        // This VM's speed drifts within minutes (docs/performance.md), so the raw
        // publish measured at the start can be far from what the broker
        // managed while Fire ran. Fire alone is also measured against the
        // same raw publish run right before and right after it.
        let adjacent = async |when: &str| {
            let (mut stage, _) = publish_then_consume(n, closed, best_layout).await?;
            stage.what = format!("{}, measured right {when} the Fire-only case", stage.what);
            stage.name = format!("{}{when}_fire_only", report::ADJACENT_PUBLISH);
            anyhow::Ok(stage)
        };
        if fire_only {
            stages.push(adjacent("before").await?);
        }
        let crowd = if s.crowd {
            Some(herald::create_crowd(&mut ingest, receiver.addr).await?)
        } else {
            None
        };
        let result = herald::run_case(env, &ingest, &receiver, &db, s, PAYLOAD, timeout).await?;
        if let Some(ids) = crowd {
            herald::delete_crowd(&mut ingest, ids).await?;
        }
        if fire_only {
            stages.push(adjacent("after").await?);
        }
        println!(
            "    Fire {:.0}/s p99 {:.2} ms; {:.0} deliveries/s; {:.1} s",
            result.fire_calls_per_s,
            result.fire_latency.p99_ms,
            result.deliveries_per_s,
            result.wall_s
        );
        cases.push(result);
    }
    ingest.proc.stop(Duration::from_secs(15)).await;
    Ok((stages, ingest_idle_rss, cases))
}

fn spec(
    name: &str,
    event: &str,
    webhooks: usize,
    events: usize,
    load: Load,
    senders: usize,
) -> CaseSpec {
    CaseSpec {
        name: name.into(),
        event: event.into(),
        webhooks,
        events,
        load,
        senders,
        backlog: false,
        prefetch: None,
        door: Door::Grpc,
        crowd: false,
        ordering_keys: None,
    }
}

/// Resolves on SIGINT or SIGTERM (`timeout` sends the latter).
async fn interrupted() -> &'static str {
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(_) => return std::future::pending().await,
        };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = terminate.recv() => "SIGTERM",
    }
}

/// Removes what earlier runs left behind when they were killed before
/// their clean-up (SIGKILL, a crash): their databases and, named after them,
/// their queues and exchanges. A quorum queue left full of messages slows
/// the broker for every later run. A database with a connection belongs to
/// a run still going and is left alone.
async fn remove_abandoned_runs(admin: &tokio_postgres::Client, cli: &Cli) {
    let rows = match admin
        .query(
            r"SELECT d.datname FROM pg_database d
              WHERE d.datname LIKE 'herald\_bench\_%'
                AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.datname = d.datname)",
            &[],
        )
        .await
    {
        Ok(rows) => rows,
        Err(e) => {
            eprintln!("could not look for abandoned bench runs: {e}");
            return;
        }
    };
    for row in rows {
        let name: String = row.get(0);
        // Only names this bench makes, so that the name is safe in SQL.
        if !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            continue;
        }
        let abandoned = Env {
            bin_dir: PathBuf::new(),
            log_dir: PathBuf::new(),
            database_url: String::new(),
            amqp_url: cli.amqp_url.clone(),
            prefix: name.clone(),
            schedule: SCHEDULE.into(),
            queue_type: cli.queue_type,
            publish_channels: None,
            otel_endpoint: None,
        };
        let queues = delete_queues(&abandoned).await;
        let database = admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await;
        match (queues, database) {
            (Ok(()), Ok(())) => {
                println!("removed the database and queues of an abandoned run: {name}");
            }
            (queues, database) => eprintln!(
                "could not remove all of the abandoned run {name}: queues {queues:?}, database {database:?}"
            ),
        }
    }
}

async fn delete_queues(env: &Env) -> anyhow::Result<()> {
    let connection =
        lapin::Connection::connect(&env.amqp_url, lapin::ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    let _ = env.topology()?.delete(&channel).await;
    let channel = connection.create_channel().await?;
    let _ = channel
        .queue_delete(
            format!("{}.raw", env.prefix).as_str().into(),
            lapin::options::QueueDeleteOptions::default(),
        )
        .await;
    let _ = connection.close(200, "done".into()).await;
    Ok(())
}
