//! Real `herald-sender` and `herald-ingest` processes for the tests that
//! exercise the services as they run in production: started from the built
//! binaries with `HERALD_*` environment variables, stopped with real
//! signals, observed through their HTTP endpoints (`/readyz`, `/metrics`).
//! A process handle that is dropped while its process still runs kills it
//! (SIGKILL) and reaps it, so a failing test leaves no process behind.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::TestEnv;

/// A running `herald-sender` process bound to one `TestEnv`.
pub struct SenderProcess {
    pub name: String,
    /// Where its health and metrics endpoints listen.
    pub http_addr: SocketAddr,
    process: Service,
}

impl SenderProcess {
    /// Starts `herald-sender` against `env`'s database and queues (its
    /// `queue.amqp_url`: the test broker, or a cluster's URLs), with a
    /// test-friendly configuration; `overrides` (environment variables) are
    /// applied last. Waits until `/readyz` answers 200.
    pub async fn start(
        env: &TestEnv,
        name: &str,
        overrides: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let binary = sender_binary()?;
        let http_addr = free_port()?;
        let mut command = service_command(&binary, env);
        command
            .env("HERALD_PREFETCH", "64")
            .env("HERALD_HTTP_LISTEN", http_addr.to_string());
        for (key, value) in overrides {
            command.env(key, value);
        }
        let mut process = Self {
            name: name.to_owned(),
            http_addr,
            process: Service::spawn(command, &binary, name)?,
        };
        process.wait_ready(Duration::from_secs(60)).await?;
        Ok(process)
    }

    pub fn pid(&self) -> u32 {
        self.process.child.id()
    }

    /// Waits until `/readyz` answers 200; fails early if the process exits.
    pub async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        self.process
            .wait_ready(self.http_addr, "/readyz", timeout)
            .await
    }

    /// GET on its HTTP listener: status and body.
    pub async fn get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        http_get(self.http_addr, path).await
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> anyhow::Result<String> {
        let (status, body) = self.get("/metrics").await?;
        anyhow::ensure!(status == 200, "{}: /metrics answered {status}", self.name);
        Ok(body)
    }

    /// Its `herald_deliveries_total{outcome}` so far; 0 when it has no such
    /// series yet (a sender that settled nothing with that outcome).
    pub async fn deliveries(&self, outcome: &str) -> anyhow::Result<f64> {
        let text = self.metrics().await?;
        Ok(
            prometheus_sum(&text, "herald_deliveries_total", &[("outcome", outcome)])
                .unwrap_or(0.0),
        )
    }

    /// Sends SIGTERM (graceful shutdown).
    pub fn sigterm(&self) -> anyhow::Result<()> {
        signal(self.pid(), "TERM")
    }

    /// Sends SIGKILL.
    pub fn sigkill(&mut self) -> anyhow::Result<()> {
        self.process.sigkill()
    }

    /// Its exit status, if it has exited.
    pub fn try_exit(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        self.process.try_exit()
    }

    /// Waits for it to exit; `None` if it still runs after `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<Option<ExitStatus>> {
        self.process.wait_exit(timeout).await
    }
}

/// A running `herald-ingest` process bound to one `TestEnv`, with
/// authentication off and plain-HTTP targets allowed (test receivers).
pub struct IngestProcess {
    /// Where its gRPC API listens.
    pub grpc_addr: SocketAddr,
    /// Where its health and metrics endpoints listen.
    pub metrics_addr: SocketAddr,
    process: Service,
}

impl IngestProcess {
    /// Starts `herald-ingest` against `env`'s database and queues;
    /// `overrides` (environment variables) are applied last. Waits until
    /// `/healthz` answers 200 (its gRPC listener is bound before that).
    pub async fn start(
        env: &TestEnv,
        name: &str,
        overrides: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let binary = workspace_binary("herald-ingest", "herald-ingest")?;
        let grpc_addr = free_port()?;
        let metrics_addr = free_port()?;
        let mut command = service_command(&binary, env);
        command
            .env("HERALD_LISTEN", grpc_addr.to_string())
            .env("HERALD_METRICS_LISTEN", metrics_addr.to_string())
            .env("HERALD_AUTH", "disabled")
            .env("HERALD_ALLOW_HTTP", "true");
        for (key, value) in overrides {
            command.env(key, value);
        }
        let mut ingest = Self {
            grpc_addr,
            metrics_addr,
            process: Service::spawn(command, &binary, name)?,
        };
        ingest
            .process
            .wait_ready(metrics_addr, "/healthz", Duration::from_secs(60))
            .await?;
        Ok(ingest)
    }

    /// A client of its Ingest API.
    pub async fn client(
        &self,
    ) -> anyhow::Result<herald_proto::v1::ingest_client::IngestClient<tonic::transport::Channel>>
    {
        Ok(
            herald_proto::v1::ingest_client::IngestClient::connect(format!(
                "http://{}",
                self.grpc_addr
            ))
            .await?,
        )
    }

    /// Sends SIGTERM and waits for it to exit; its status.
    pub async fn stop(&mut self, timeout: Duration) -> anyhow::Result<Option<ExitStatus>> {
        if self.process.try_exit()?.is_none() {
            signal(self.process.child.id(), "TERM")?;
        }
        self.process.wait_exit(timeout).await
    }
}

/// `binary` with what both services share in a test: `env`'s database and
/// queues, small pools and quick refreshes, loopback targets allowed, and
/// quiet text logs.
fn service_command(binary: &Path, env: &TestEnv) -> Command {
    let mut command = Command::new(binary);
    command
        .env("HERALD_DATABASE_URL", &env.database_url)
        .env("HERALD_AMQP_URL", env.queue.amqp_url.expose())
        .env("HERALD_QUEUE_PREFIX", &env.queue.prefix)
        .env("HERALD_QUEUE_TYPE", "quorum")
        .env("HERALD_SCHEDULE", env.queue.schedule.to_string())
        .env("HERALD_WORK_QUEUES", env.queue.work_queues.to_string())
        .env(
            "HERALD_ORDERED_PARTITIONS",
            env.queue.ordered_partitions.to_string(),
        )
        .env("HERALD_DRAIN_TIMEOUT_SECS", "10")
        .env("HERALD_DB_POOL_SIZE", "4")
        .env("HERALD_CONFIG_REFRESH_MS", "500")
        // As in `TestEnv::start_sender_on`: the breaker stays out of tests
        // that fail many attempts on purpose, unless a webhook sets its own.
        .env("HERALD_BREAKER_FAILURES", "10000")
        // Test receivers are on loopback.
        .env("HERALD_SSRF_ALLOW", "127.0.0.0/8")
        .env("HERALD_LOG_FORMAT", "text")
        .env("RUST_LOG", "warn");
    command
}

/// A service's child process: its log lines go to the test's output,
/// prefixed with its name, and dropping it kills and reaps it.
struct Service {
    name: String,
    child: Child,
    exit: Option<ExitStatus>,
}

impl Service {
    fn spawn(mut command: Command, binary: &Path, name: &str) -> anyhow::Result<Self> {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .with_context(|| format!("spawning {}", binary.display()))?;
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let prefix = name.to_owned();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    eprintln!("[{prefix}] {line}");
                }
            });
        }
        Ok(Self {
            name: name.to_owned(),
            child,
            exit: None,
        })
    }

    /// Waits until `path` on `addr` answers 200; fails early if the
    /// process exits.
    async fn wait_ready(
        &mut self,
        addr: SocketAddr,
        path: &str,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit()? {
                anyhow::bail!("{} exited before it was ready: {status}", self.name);
            }
            if let Ok((200, _)) = http_get(addr, path).await {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{} not ready within {timeout:?}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn sigkill(&mut self) -> anyhow::Result<()> {
        if self.try_exit()?.is_none() {
            self.child.kill().context("SIGKILL")?;
        }
        Ok(())
    }

    fn try_exit(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().context("polling the child")?;
        }
        Ok(self.exit)
    }

    async fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Sends `SIGname` to `pid` with the `kill` command.
pub fn signal(pid: u32, name: &str) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .context("running kill")?;
    anyhow::ensure!(status.success(), "kill -{name} {pid}: {status}");
    Ok(())
}

/// A loopback address no one listens on right now.
pub fn free_port() -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding port 0")?;
    Ok(listener.local_addr()?)
}

/// One GET over HTTP/1.1 with a 5 s limit: status and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let uri: hyper::Uri = format!("http://{addr}{path}").parse()?;
    let exchange = async {
        let response = client.get(uri).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        Ok::<_, anyhow::Error>((status, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .with_context(|| format!("GET {path} on {addr} timed out"))?
}

/// The `herald-sender` binary of the profile these tests were built with,
/// built (once per test process) so it is never stale. `HERALD_TEST_SENDER_BIN`
/// names a binary to use instead, without building.
pub fn sender_binary() -> anyhow::Result<PathBuf> {
    static BINARY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BINARY
        .get_or_init(|| build_sender().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn build_sender() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("HERALD_TEST_SENDER_BIN") {
        return Ok(PathBuf::from(path));
    }
    workspace_binary("herald-sender", "herald-sender")
}

/// Builds binary `bin` of workspace package `package` in the profile and
/// target directory these tests were built with (a no-op when it is fresh)
/// and returns its path.
pub fn workspace_binary(package: &str, bin: &str) -> anyhow::Result<PathBuf> {
    // The test executable is target/<profile>/deps/<name>-<hash>.
    let exe = std::env::current_exe().context("locating the test executable")?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("the test executable is not in target/<profile>/deps")?
        .to_path_buf();
    let target_dir = profile_dir
        .parent()
        .context("the profile directory has no parent")?;
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("debug")
        .to_owned();
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("workspace root")?;
    let mut command = Command::new(env!("CARGO"));
    command
        .current_dir(workspace)
        .args(["build", "--quiet", "-p", package, "--bin", bin])
        .arg("--target-dir")
        .arg(target_dir);
    match profile.as_str() {
        "debug" => {}
        "release" => {
            command.arg("--release");
        }
        other => {
            command.args(["--profile", other]);
        }
    }
    let started = Instant::now();
    let status = command.status().context("running cargo build")?;
    anyhow::ensure!(
        status.success(),
        "cargo build -p {package} --bin {bin}: {status}"
    );
    let binary = profile_dir.join(format!("{bin}{}", std::env::consts::EXE_SUFFIX));
    anyhow::ensure!(
        binary.is_file(),
        "{} missing after the build",
        binary.display()
    );
    eprintln!(
        "{bin} built ({profile}) in {:.1?}: {}",
        started.elapsed(),
        binary.display()
    );
    Ok(binary)
}

/// Sums the samples of `metric` whose labels include every `(name, value)`
/// of `labels`, in Prometheus text format; `None` if there is no such sample.
pub fn prometheus_sum(text: &str, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, sample_labels, value)) = parse_sample(line) else {
            continue;
        };
        if name != metric {
            continue;
        }
        if labels
            .iter()
            .all(|(k, v)| sample_labels.iter().any(|(sk, sv)| sk == k && sv == v))
        {
            *found.get_or_insert(0.0) += value;
        }
    }
    found
}

/// A sample's metric name, labels and value.
type Sample<'a> = (&'a str, Vec<(String, String)>, f64);

/// `name{label="value",...} value [timestamp]`.
fn parse_sample(line: &str) -> Option<Sample<'_>> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .unwrap_or(line.len());
    let name = &line[..name_end];
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        let mut chars = after.char_indices();
        let mut key = String::new();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '}' => break i,
                ',' | ' ' => {}
                '=' => {
                    if chars.next()?.1 != '"' {
                        return None;
                    }
                    let mut value = String::new();
                    loop {
                        match chars.next()?.1 {
                            '"' => break,
                            '\\' => match chars.next()?.1 {
                                'n' => value.push('\n'),
                                other => value.push(other),
                            },
                            other => value.push(other),
                        }
                    }
                    labels.push((std::mem::take(&mut key), value));
                }
                other => key.push(other),
            }
        };
        rest = &after[end + 1..];
    }
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some((name, labels, value))
}

#[cfg(test)]
mod tests {
    use super::prometheus_sum;

    const TEXT: &str = r#"
# HELP herald_deliveries_total Deliveries by outcome.
# TYPE herald_deliveries_total counter
herald_deliveries_total{outcome="succeeded"} 3345
herald_deliveries_total{event="a,b}",outcome="succeeded"} 5 1700000000000
herald_deliveries_total{outcome="failed"} 7
herald_deliveries_total_other{outcome="succeeded"} 1000
herald_attempts_total 12
"#;

    #[test]
    fn sums_matching_series() {
        let sum = |metric, labels: &[(&str, &str)]| prometheus_sum(TEXT, metric, labels);
        assert_eq!(
            sum("herald_deliveries_total", &[("outcome", "succeeded")]),
            Some(3350.0)
        );
        assert_eq!(
            sum("herald_deliveries_total", &[("outcome", "failed")]),
            Some(7.0)
        );
        assert_eq!(sum("herald_deliveries_total", &[]), Some(3357.0));
        assert_eq!(sum("herald_attempts_total", &[]), Some(12.0));
        assert_eq!(
            sum("herald_deliveries_total", &[("outcome", "cancelled")]),
            None
        );
        assert_eq!(sum("herald_missing", &[]), None);
    }
}
