//! A RabbitMQ cluster of its own for the tests that break brokers one node
//! at a time: `n` extra nodes of the machine's `rabbitmq-server` install,
//! beside (and never touching) the machine's own broker, each with its own
//! node name, AMQP and distribution ports, config file, data and log
//! directories and no plugins, clustered with `rabbitmqctl join_cluster`.
//! They share the machine's Erlang cookie (`/var/lib/rabbitmq`), so this
//! needs root (or the `rabbitmq` user): Debian's wrapper runs the nodes as
//! `rabbitmq`, which therefore owns their files.
//!
//! Node names and directories carry the test process's pid, so a leftover of
//! a crashed run cannot clash with a new one; [`RabbitCluster::start`] also
//! removes the leftovers of runs whose process is gone. Dropping a
//! [`RabbitCluster`] stops its nodes, `kill -9`s any of their processes still
//! running and removes the directories, also when the test panicked.
//!
//! Every wait polls a condition against a deadline; nothing sleeps for a
//! fixed time beyond the short polling interval.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;

/// Where the clusters' directories go: `<ROOT>-<pid>-<k>`.
const DIR_PREFIX: &str = "herald-cluster-";
/// How long a node may take to start (or to come back after a kill).
pub const START_TIMEOUT: Duration = Duration::from_secs(90);
/// Between two `rabbitmqctl` polls: each call starts an Erlang VM (about
/// 0.5 s of CPU), which a 2-core machine under load feels.
const POLL: Duration = Duration::from_secs(1);

/// One node of a [`RabbitCluster`].
#[derive(Debug, Clone)]
pub struct Node {
    /// Erlang node name, `hrld<pid>c<k>n<i>@localhost`.
    pub name: String,
    pub amqp_port: u16,
    pub dist_port: u16,
    dir: PathBuf,
}

impl Node {
    /// Its AMQP URL (guest/guest on loopback, default vhost).
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.amqp_port)
    }

    fn mnesia_base(&self) -> PathBuf {
        self.dir.join("mnesia")
    }

    /// Starts `rabbitmq-server -detached` for this node (returns once the
    /// wrapper returned, before the node is up).
    fn spawn(&self) -> anyhow::Result<()> {
        let output = Command::new("rabbitmq-server")
            .arg("-detached")
            .env("RABBITMQ_NODENAME", &self.name)
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_CONFIG_FILE", self.dir.join("node.conf"))
            .env("RABBITMQ_MNESIA_BASE", self.mnesia_base())
            .env("RABBITMQ_LOG_BASE", self.dir.join("log"))
            // Erlang's schedulers spin while they wait for work; three VMs
            // (four with the machine's broker) spinning on two cores take
            // the CPU from each other and from Herald. HERALD_CLUSTER_ERL_ARGS
            // replaces these flags (an empty value keeps Erlang's defaults).
            .env(
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
                std::env::var("HERALD_CLUSTER_ERL_ARGS")
                    .unwrap_or_else(|_| "+sbwt none +sbwtdcpu none +sbwtdio none".into()),
            )
            .env(
                "RABBITMQ_ENABLED_PLUGINS_FILE",
                self.dir.join("enabled_plugins"),
            )
            .stdin(Stdio::null())
            .output()
            .context("running rabbitmq-server (is RabbitMQ installed?)")?;
        anyhow::ensure!(
            output.status.success(),
            "rabbitmq-server -detached for {}: {}\n{}{}",
            self.name,
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(())
    }

    /// OS pids of this node's processes (the Erlang VM and its helpers),
    /// found by the `RABBITMQ_MNESIA_BASE` in their environment, which only
    /// this node's processes carry.
    fn os_pids(&self) -> Vec<u32> {
        processes_with_env(&format!(
            "RABBITMQ_MNESIA_BASE={}",
            self.mnesia_base().display()
        ))
    }
}

/// The first node that answers `args` (JSON output), trying each node.
async fn ask_any(nodes: &[Node], args: &[&str]) -> anyhow::Result<serde_json::Value> {
    let mut errors = Vec::new();
    for node in nodes {
        match ctl(&node.name, args, Duration::from_secs(30)).await {
            Ok(out) if out.ok => {
                return serde_json::from_str(&out.stdout)
                    .with_context(|| format!("{args:?}: not JSON: {}", out.stdout));
            }
            Ok(out) => errors.push(format!("{}: {}{}", node.name, out.stdout, out.stderr)),
            Err(e) => errors.push(format!("{}: {e:#}", node.name)),
        }
    }
    anyhow::bail!("no node answered {args:?}:\n{}", errors.join("\n"))
}

/// Read-only queries on a [`RabbitCluster`], for another task.
#[derive(Debug, Clone)]
pub struct ClusterHandle {
    nodes: Vec<Node>,
}

impl ClusterHandle {
    /// The AMQP connections per node, by their client-given names
    /// (`connection_name`), e.g. `0: herald-ingest, herald-sender-1-retry`.
    pub async fn connection_summary(&self) -> String {
        let list = match ask_any(
            &self.nodes,
            &[
                "list_connections",
                "port",
                "state",
                "client_properties",
                "--formatter",
                "json",
            ],
        )
        .await
        {
            Ok(list) => list,
            Err(e) => return format!("unknown ({})", e.to_string().lines().next().unwrap_or("")),
        };
        let mut per_node: Vec<Vec<String>> = vec![Vec::new(); self.nodes.len()];
        for c in list.as_array().into_iter().flatten() {
            let Some(i) = c["port"]
                .as_u64()
                .and_then(|p| self.nodes.iter().position(|n| u64::from(n.amqp_port) == p))
            else {
                continue;
            };
            // client_properties is a list of [key, type, value] triples.
            let name = c["client_properties"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|p| p[0] == "connection_name")
                .and_then(|p| p[2].as_str())
                .unwrap_or("?");
            per_node[i].push(format!("{name} ({})", c["state"].as_str().unwrap_or("?")));
        }
        per_node
            .iter()
            .enumerate()
            .map(|(i, names)| format!("{i}: {}", names.join(", ")))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// One line on the queues whose names start with `prefix`: per queue,
    /// ready + unacked messages, leader node and online members, e.g.
    /// `work 12+64 L2 [0,1,2]`.
    pub async fn queue_summary(&self, prefix: &str) -> String {
        let list = match ask_any(
            &self.nodes,
            &[
                "list_queues",
                "name",
                "messages_ready",
                "messages_unacknowledged",
                "leader",
                "online",
                "--formatter",
                "json",
            ],
        )
        .await
        {
            Ok(list) => list,
            Err(e) => return format!("unknown ({})", e.to_string().lines().next().unwrap_or("")),
        };
        let index = |name: &serde_json::Value| {
            name.as_str()
                .and_then(|n| self.nodes.iter().position(|node| node.name == n))
                .map_or_else(|| "?".to_owned(), |i| i.to_string())
        };
        let mut parts = Vec::new();
        for q in list.as_array().into_iter().flatten() {
            let Some(name) = q["name"].as_str().and_then(|n| n.strip_prefix(prefix)) else {
                continue;
            };
            let online: Vec<String> = q["online"]
                .as_array()
                .into_iter()
                .flatten()
                .map(index)
                .collect();
            parts.push(format!(
                "{} {}+{} L{} [{}]",
                name.trim_start_matches('.'),
                q["messages_ready"],
                q["messages_unacknowledged"],
                index(&q["leader"]),
                online.join(",")
            ));
        }
        parts.sort();
        parts.join("; ")
    }
}

/// A running cluster of `n` RabbitMQ nodes; see the module documentation.
pub struct RabbitCluster {
    dir: PathBuf,
    nodes: Vec<Node>,
}

/// What `rabbitmqctl` printed, and whether it succeeded.
struct Ctl {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// Runs `rabbitmqctl -q -n node args…`, killed if it takes over `limit`.
async fn ctl(node: &str, args: &[&str], limit: Duration) -> anyhow::Result<Ctl> {
    let mut command = tokio::process::Command::new("rabbitmqctl");
    command
        .arg("-q")
        .arg("-n")
        .arg(node)
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(limit, command.output())
        .await
        .with_context(|| format!("rabbitmqctl -n {node} {args:?} took over {limit:?}"))?
        .with_context(|| format!("running rabbitmqctl -n {node} {args:?}"))?;
    Ok(Ctl {
        ok: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// Like [`ctl`], failing unless the command succeeded.
async fn ctl_ok(node: &str, args: &[&str], limit: Duration) -> anyhow::Result<String> {
    let out = ctl(node, args, limit).await?;
    anyhow::ensure!(
        out.ok,
        "rabbitmqctl -n {node} {args:?} failed:\n{}{}",
        out.stdout,
        out.stderr
    );
    Ok(out.stdout)
}

impl RabbitCluster {
    /// Starts `n` nodes, clusters them (nodes 1.. join node 0) and waits
    /// until every node is running in the cluster.
    pub async fn start(n: usize) -> anyhow::Result<Self> {
        static CLUSTERS: AtomicUsize = AtomicUsize::new(0);
        anyhow::ensure!(n >= 1, "a cluster needs a node");
        remove_leftovers();
        let pid = std::process::id();
        let k = CLUSTERS.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("{DIR_PREFIX}{pid}-{k}"));
        let mut cluster = Self {
            dir: dir.clone(),
            nodes: Vec::new(),
        };
        // From here on, Drop removes whatever was created.
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut ports = HashSet::new();
        for i in 0..n {
            let node = Node {
                name: format!("hrld{pid}c{k}n{i}@localhost"),
                amqp_port: fresh_port(&mut ports)?,
                dist_port: fresh_port(&mut ports)?,
                dir: dir.join(format!("n{i}")),
            };
            std::fs::create_dir_all(node.mnesia_base())?;
            std::fs::create_dir_all(node.dir.join("log"))?;
            // The machine's rabbitmq.conf pins the listener to 5672: each
            // node has a config file of its own instead.
            std::fs::write(
                node.dir.join("node.conf"),
                format!(
                    "listeners.tcp.1 = 127.0.0.1:{}\nloopback_users = none\n",
                    node.amqp_port
                ),
            )?;
            std::fs::write(node.dir.join("enabled_plugins"), "[].\n")?;
            cluster.nodes.push(node);
        }
        let chown = Command::new("chown")
            .args(["-R", "rabbitmq:rabbitmq"])
            .arg(&dir)
            .status()
            .context("chown")?;
        anyhow::ensure!(
            chown.success(),
            "chown -R rabbitmq {}: {chown}",
            dir.display()
        );

        let started = Instant::now();
        for node in &cluster.nodes {
            node.spawn()?;
        }
        for i in 0..n {
            cluster.await_node_up(i, START_TIMEOUT).await?;
        }
        let first = cluster.nodes[0].name.clone();
        for node in &cluster.nodes[1..] {
            let limit = Duration::from_secs(60);
            ctl_ok(&node.name, &["stop_app"], limit).await?;
            ctl_ok(&node.name, &["join_cluster", &first], limit).await?;
            ctl_ok(&node.name, &["start_app"], limit).await?;
        }
        cluster.await_running(n, Duration::from_secs(60)).await?;
        eprintln!(
            "RabbitMQ cluster of {n} nodes up in {:.1?}: {}",
            started.elapsed(),
            cluster.urls()
        );
        Ok(cluster)
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Every node's AMQP URL, comma-separated (`HERALD_AMQP_URL`).
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(Node::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The directory holding every node's files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The OS pid of node `i`'s Erlang VM, as `rabbitmqctl status` reports it.
    pub async fn os_pid(&self, i: usize) -> anyhow::Result<u32> {
        let out = ctl_ok(
            &self.nodes[i].name,
            &["status", "--formatter", "json"],
            Duration::from_secs(30),
        )
        .await?;
        let status: serde_json::Value = serde_json::from_str(&out).context("status JSON")?;
        let pid = match &status["pid"] {
            serde_json::Value::Number(n) => n.as_u64(),
            serde_json::Value::String(s) => s.parse().ok(),
            _ => None,
        };
        pid.and_then(|p| u32::try_from(p).ok())
            .with_context(|| format!("no pid in the status of {}", self.nodes[i].name))
    }

    /// `kill -9` of node `i`'s Erlang VM; returns once it is gone.
    pub async fn kill9(&self, i: usize) -> anyhow::Result<()> {
        let pid = self.os_pid(i).await?;
        let status = Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .context("kill")?;
        anyhow::ensure!(status.success(), "kill -9 {pid}: {status}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Path::new(&format!("/proc/{pid}")).exists() {
            anyhow::ensure!(Instant::now() < deadline, "pid {pid} outlived kill -9");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Starts node `i` again (after [`RabbitCluster::kill9`]); it rejoins
    /// the cluster by itself. Returns once it runs.
    pub async fn start_node(&self, i: usize) -> anyhow::Result<()> {
        self.nodes[i].spawn()?;
        self.await_node_up(i, START_TIMEOUT).await
    }

    /// `rabbitmqctl stop_app` on node `i` (the Erlang VM stays up).
    pub async fn stop_app(&self, i: usize) -> anyhow::Result<()> {
        ctl_ok(&self.nodes[i].name, &["stop_app"], Duration::from_secs(60))
            .await
            .map(drop)
    }

    /// `rabbitmqctl start_app` on node `i`; returns once it runs.
    pub async fn start_app(&self, i: usize) -> anyhow::Result<()> {
        ctl_ok(&self.nodes[i].name, &["start_app"], START_TIMEOUT)
            .await
            .map(drop)
    }

    /// Waits until node `i` answers and its RabbitMQ application runs.
    pub async fn await_node_up(&self, i: usize, timeout: Duration) -> anyhow::Result<()> {
        let name = &self.nodes[i].name;
        let deadline = Instant::now() + timeout;
        loop {
            // `await_startup` fails at once while the VM is not yet
            // registered with epmd, so it is polled.
            let out = ctl(
                name,
                &["await_startup", "--timeout", "10"],
                Duration::from_secs(20),
            )
            .await?;
            if out.ok {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{name} not up within {timeout:?}:\n{}{}\nlog: {}",
                out.stdout,
                out.stderr,
                self.nodes[i].dir.join("log").display()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    async fn ask_any(&self, args: &[&str]) -> anyhow::Result<serde_json::Value> {
        ask_any(&self.nodes, args).await
    }

    /// A handle for queries from another task (it does not own the nodes).
    pub fn clone_handle(&self) -> ClusterHandle {
        ClusterHandle {
            nodes: self.nodes.clone(),
        }
    }

    fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// Indices of the nodes `cluster_status` lists as running.
    pub async fn running(&self) -> anyhow::Result<Vec<usize>> {
        let status = self
            .ask_any(&["cluster_status", "--formatter", "json"])
            .await?;
        let mut running: Vec<usize> = status["running_nodes"]
            .as_array()
            .context("cluster_status has no running_nodes")?
            .iter()
            .filter_map(|n| self.index_of(n.as_str()?))
            .collect();
        running.sort_unstable();
        Ok(running)
    }

    /// Waits until `cluster_status` lists `n` running nodes.
    pub async fn await_running(&self, n: usize, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let running = self.running().await;
            if matches!(&running, Ok(r) if r.len() == n) {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{n} running nodes expected within {timeout:?}: {running:?}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// The quorum queue `queue` (default vhost): its leader's node index and
    /// the indices of its members that are online.
    pub async fn quorum_state(&self, queue: &str) -> anyhow::Result<(usize, Vec<usize>)> {
        let list = self
            .ask_any(&[
                "list_queues",
                "name",
                "leader",
                "online",
                "--formatter",
                "json",
            ])
            .await?;
        let entry = list
            .as_array()
            .context("list_queues is not a list")?
            .iter()
            .find(|q| q["name"] == queue)
            .with_context(|| format!("queue {queue} not listed"))?;
        let leader = entry["leader"]
            .as_str()
            .and_then(|n| self.index_of(n))
            .with_context(|| format!("queue {queue}: leader {} unknown", entry["leader"]))?;
        let mut online: Vec<usize> = entry["online"]
            .as_array()
            .map(|members| {
                members
                    .iter()
                    .filter_map(|n| self.index_of(n.as_str()?))
                    .collect()
            })
            .unwrap_or_default();
        online.sort_unstable();
        Ok((leader, online))
    }

    /// The node index of the leader of quorum queue `queue`.
    pub async fn leader_of(&self, queue: &str) -> anyhow::Result<usize> {
        Ok(self.quorum_state(queue).await?.0)
    }

    /// Waits until quorum queue `queue` has a leader and `members` online
    /// members; returns the leader.
    pub async fn await_quorum(
        &self,
        queue: &str,
        members: usize,
        timeout: Duration,
    ) -> anyhow::Result<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            let state = self.quorum_state(queue).await;
            match &state {
                Ok((leader, online)) if online.len() >= members => return Ok(*leader),
                _ => {}
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "queue {queue}: {members} members online expected within {timeout:?}: {state:?}"
            );
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Drop for RabbitCluster {
    /// Stops every node (`rabbitmqctl stop`, at most 15 s), `kill -9`s any
    /// of their processes still running, and removes the directories.
    fn drop(&mut self) {
        let stops: Vec<_> = self
            .nodes
            .iter()
            .filter(|node| !node.os_pids().is_empty())
            .filter_map(|node| {
                Command::new("rabbitmqctl")
                    .args(["-n", &node.name, "stop", "--timeout", "10"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .ok()
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(15);
        for mut stop in stops {
            while matches!(stop.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = stop.kill();
            let _ = stop.wait();
        }
        kill_all_under(&self.dir);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A free loopback port not in `taken` (and not one of the ports the
/// machine's broker and the CLI tools use), added to `taken`.
fn fresh_port(taken: &mut HashSet<u16>) -> anyhow::Result<u16> {
    for _ in 0..100 {
        let port = crate::process::free_port()?.port();
        let reserved = matches!(port, 4369 | 5672 | 25672 | 35672..=35682);
        if !reserved && taken.insert(port) {
            return Ok(port);
        }
    }
    anyhow::bail!("no free port")
}

/// Pids of the processes whose environment holds the entry `entry` exactly.
fn processes_with_env(entry: &str) -> Vec<u32> {
    let Ok(proc) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    proc.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|environ| {
                environ
                    .split(|b| *b == 0)
                    .any(|var| var == entry.as_bytes())
            })
        })
        .collect()
}

/// `kill -9` of every process started for a node under `dir` (their
/// `RABBITMQ_MNESIA_BASE` lies in it); waits (up to 10 s) until they are gone.
fn kill_all_under(dir: &Path) {
    let Ok(nodes) = std::fs::read_dir(dir) else {
        return;
    };
    let mut pids = Vec::new();
    for node in nodes.flatten() {
        let base = node.path().join("mnesia");
        pids.extend(processes_with_env(&format!(
            "RABBITMQ_MNESIA_BASE={}",
            base.display()
        )));
    }
    for pid in &pids {
        let _ = Command::new("kill")
            .args(["-9", &pid.to_string()])
            .stderr(Stdio::null())
            .status();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids
        .iter()
        .any(|pid| Path::new(&format!("/proc/{pid}")).exists())
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Removes the clusters of test processes that no longer run (killed before
/// their Drop could): their nodes and their directories.
fn remove_leftovers() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(DIR_PREFIX)) else {
            continue;
        };
        let Some(owner) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if owner != std::process::id() && !Path::new(&format!("/proc/{owner}")).exists() {
            eprintln!("removing the leftover cluster {}", entry.path().display());
            kill_all_under(&entry.path());
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Starts a three-node cluster, checks that it is one cluster of three
    /// running nodes that each take AMQP connections, and that dropping it
    /// leaves no process and no file behind.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cluster_starts_clusters_and_is_removed() {
        let started = Instant::now();
        let cluster = RabbitCluster::start(3).await.expect("cluster");
        assert_eq!(cluster.running().await.unwrap(), vec![0, 1, 2]);
        let pids: Vec<u32> = cluster.nodes().iter().flat_map(Node::os_pids).collect();
        assert!(pids.len() >= 3, "node processes: {pids:?}");
        for node in cluster.nodes() {
            let config = herald_queue::QueueConfig::new(node.url(), "cluster-smoke");
            let connection = herald_queue::connect(&config, "cluster-smoke")
                .await
                .unwrap_or_else(|e| panic!("{}: {e:#}", node.url()));
            let _ = connection.close(200, "done".into()).await;
        }
        assert_eq!(cluster.urls().split(',').count(), 3);
        let dir = cluster.dir().to_path_buf();
        drop(cluster);
        assert!(!dir.exists(), "{} left behind", dir.display());
        let alive: Vec<&u32> = pids
            .iter()
            .filter(|pid| Path::new(&format!("/proc/{pid}")).exists())
            .collect();
        assert!(alive.is_empty(), "node processes left: {alive:?}");
        eprintln!("cluster smoke test took {:.1?}", started.elapsed());
        assert!(started.elapsed() < Duration::from_secs(60));
    }
}
