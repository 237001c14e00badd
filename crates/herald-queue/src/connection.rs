//! One AMQP connection with a few confirm-mode channels, re-established on
//! demand after the broker went away, and the list of broker nodes a
//! connection may go to.
//!
//! `HERALD_AMQP_URL` may name several nodes of one RabbitMQ cluster,
//! comma-separated. Each connection starts at a random node, so that the
//! connections of many processes spread over the cluster instead of all
//! landing on the first, and tries the others in turn when that node does
//! not answer. After a connection is lost, the next attempt starts at the
//! node after the one it had, so a dead node is skipped at once.
//!
//! lapin's own auto-recovery gives up after a fixed number of tries and
//! replays state we do not need; Herald instead reconnects lazily: every
//! caller that finds the connection broken triggers (or waits for) one
//! reconnect, and a caller that cannot get a connection gets an error at once
//! — which ingest answers as UNAVAILABLE, never as a false OK.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use lapin::options::ConfirmSelectOptions;
use lapin::uri::AMQPUri;
use lapin::{Channel, Connection, ConnectionProperties};

use crate::{QueueConfig, QueueError, Topology};

/// The largest AMQP frame Herald asks for, unless the URL names its own
/// (`?frame_max=`). lapin keeps a receive and a send buffer of 32 frames for
/// every connection, so RabbitMQ's default of 128 KiB costs 4 MiB each, and
/// a burst of deliveries touches all of the receive buffer, which a sender
/// then keeps as resident memory (measured in docs/performance.md, item 13).
/// Herald's messages are a few hundred bytes; a large payload is only split
/// over more frames.
pub const DEFAULT_FRAME_MAX: u32 = 32 * 1024;

/// The broker URL with Herald's frame size unless it names one.
fn broker_uri(amqp_url: &str) -> Result<AMQPUri, QueueError> {
    // One of the parser's messages quotes the URL, and with it the password.
    let mut uri: AMQPUri = amqp_url
        .parse()
        .map_err(|e: String| QueueError::InvalidUrl(e.replace(amqp_url, "<the URL>")))?;
    uri.query.frame_max.get_or_insert(DEFAULT_FRAME_MAX);
    Ok(uri)
}

/// The broker nodes of a comma-separated `HERALD_AMQP_URL`, parsed. Services
/// parse the option with it at start-up, so that a malformed URL stops them
/// with a message instead of failing each connection attempt later.
#[derive(Clone)]
pub struct Brokers {
    nodes: Vec<(AMQPUri, String)>,
}

impl Brokers {
    /// Parses one URL or several comma-separated ones. An error names the
    /// position of the bad URL, never its text (it may hold a password).
    pub fn parse(list: &str) -> Result<Self, QueueError> {
        let mut nodes = Vec::new();
        for (index, url) in list.split(',').map(str::trim).enumerate() {
            if url.is_empty() {
                return Err(QueueError::InvalidUrl(format!(
                    "URL {} of the list is empty; separate the URLs of the cluster's nodes with single commas",
                    index + 1
                )));
            }
            let uri = broker_uri(url).map_err(|e| match e {
                QueueError::InvalidUrl(reason) if list.contains(',') => {
                    QueueError::InvalidUrl(format!("URL {} of the list: {reason}", index + 1))
                }
                other => other,
            })?;
            let name = format!("{}:{}", uri.authority.host, uri.authority.port);
            nodes.push((uri, name));
        }
        Ok(Self { nodes })
    }

    /// How many nodes the list names.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Always false: a parsed list names at least one node.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// `host:port` of each node, safe to log.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.nodes.iter().map(|(_, name)| name.as_str())
    }
}

impl std::fmt::Debug for Brokers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

/// Which broker node a connection tries first. It starts at a random node
/// and, after each successful connect, points at the node after the one
/// connected to: the next reconnect (after a loss) tries another node first.
#[derive(Debug)]
pub struct NodeCursor(AtomicUsize);

impl NodeCursor {
    /// A cursor at a random node.
    pub fn random() -> Self {
        // A failed random source only costs the spread, never a connection.
        let start = getrandom::u64().unwrap_or(0);
        Self(AtomicUsize::new(start as usize))
    }

    /// A cursor at node `index` (modulo the list's length).
    pub fn at(index: usize) -> Self {
        Self(AtomicUsize::new(index))
    }
}

/// Opens one AMQP connection to a node of the configured list, starting at
/// a random node.
pub async fn connect(config: &QueueConfig, name: &str) -> Result<Connection, QueueError> {
    connect_via(config, name, &NodeCursor::random()).await
}

/// Opens one AMQP connection, trying the nodes in turn from `cursor`, each
/// bounded by the configured connect timeout; moves `cursor` past the node
/// it connected to.
pub async fn connect_via(
    config: &QueueConfig,
    name: &str,
    cursor: &NodeCursor,
) -> Result<Connection, QueueError> {
    let brokers = Brokers::parse(config.amqp_url.expose())?;
    let count = brokers.len();
    let first = cursor.0.load(Ordering::Relaxed) % count;
    let mut failures = String::new();
    let mut last_source = None;
    for step in 0..count {
        let index = (first + step) % count;
        let (uri, node) = &brokers.nodes[index];
        match connect_node(config, name, uri.clone()).await {
            Ok(connection) => {
                cursor.0.store(index + 1, Ordering::Relaxed);
                if count > 1 {
                    tracing::info!(connection = %name, node = %node, "connected to a broker node");
                }
                return Ok(connection);
            }
            Err((reason, source)) => {
                if count > 1 {
                    tracing::warn!(connection = %name, node = %node, %reason, "a broker node did not answer");
                }
                if !failures.is_empty() {
                    failures.push_str("; ");
                }
                let _ = write!(failures, "{node}: {reason}");
                last_source = source.or(last_source);
            }
        }
    }
    // The next try starts where this one did not, so nodes take turns.
    cursor.0.store(first + 1, Ordering::Relaxed);
    Err(QueueError::Unavailable {
        reason: if count > 1 {
            format!("no node of the {count} answered ({failures})")
        } else {
            failures
        },
        source: last_source,
    })
}

async fn connect_node(
    config: &QueueConfig,
    name: &str,
    uri: AMQPUri,
) -> Result<Connection, (String, Option<lapin::Error>)> {
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    match tokio::time::timeout(
        config.connect_timeout,
        Connection::connect_uri(uri, properties),
    )
    .await
    {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(source)) => Err((format!("connecting failed: {source}"), Some(source))),
        Err(_) => Err((
            format!("no connection within {:?}", config.connect_timeout),
            None,
        )),
    }
}

pub(crate) struct Live {
    connection: Connection,
    channels: Vec<Channel>,
    opened: std::time::Instant,
}

impl Live {
    fn healthy(&self) -> bool {
        self.connection.status().connected() && self.channels.iter().all(|c| c.status().connected())
    }
}

/// A lazily (re)connected AMQP connection whose channels are in confirm mode
/// and whose topology has been declared.
pub struct ConnectionManager {
    config: QueueConfig,
    topology: Topology,
    name: String,
    channel_count: usize,
    current: RwLock<Option<Arc<Live>>>,
    reconnecting: tokio::sync::Mutex<()>,
    next_channel: AtomicUsize,
    connects: AtomicU64,
    node: NodeCursor,
}

impl ConnectionManager {
    /// `channel_count` channels share the connection; publishes are spread
    /// over them round-robin so that confirms of concurrent callers pipeline.
    pub fn new(config: QueueConfig, name: impl Into<String>, channel_count: usize) -> Self {
        Self {
            topology: config.topology(),
            config,
            name: name.into(),
            channel_count: channel_count.max(1),
            current: RwLock::new(None),
            reconnecting: tokio::sync::Mutex::new(()),
            next_channel: AtomicUsize::new(0),
            connects: AtomicU64::new(0),
            node: NodeCursor::random(),
        }
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    pub fn config(&self) -> &QueueConfig {
        &self.config
    }

    fn healthy_live(&self) -> Option<Arc<Live>> {
        let guard = self.current.read().unwrap_or_else(|e| e.into_inner());
        guard.as_ref().filter(|live| live.healthy()).cloned()
    }

    /// A confirm-mode channel on a healthy connection, reconnecting first if
    /// needed.
    pub(crate) async fn channel(&self) -> Result<(Arc<Live>, Channel), QueueError> {
        let live = match self.healthy_live() {
            Some(live) => live,
            None => self.reconnect().await?,
        };
        let index = self.next_channel.fetch_add(1, Ordering::Relaxed) % live.channels.len();
        let channel = live.channels[index].clone();
        Ok((live, channel))
    }

    /// Makes sure a connection is up (and the topology declared).
    pub async fn ensure_connected(&self) -> Result<(), QueueError> {
        self.channel().await.map(|_| ())
    }

    async fn reconnect(&self) -> Result<Arc<Live>, QueueError> {
        let _only_one = self.reconnecting.lock().await;
        // Someone else may have reconnected while we waited for the lock.
        if let Some(live) = self.healthy_live() {
            return Ok(live);
        }
        let connection = connect_via(&self.config, &self.name, &self.node).await?;
        let mut channels = Vec::with_capacity(self.channel_count);
        for _ in 0..self.channel_count {
            let channel = connection
                .create_channel()
                .await
                .map_err(QueueError::amqp("opening a channel"))?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await
                .map_err(QueueError::amqp("enabling publisher confirms"))?;
            channels.push(channel);
        }
        self.topology.declare(&channels[0]).await?;
        // A partition whose node is down is skipped, not fatal: every other
        // delivery can still be published.
        for (partition, e) in self.topology.declare_partitions(&connection).await {
            tracing::warn!(partition, error = %e, "a partition queue of ordered delivery could not be declared; its keys wait until its node is back");
        }
        let live = Arc::new(Live {
            connection,
            channels,
            opened: std::time::Instant::now(),
        });
        let previous = self
            .current
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .replace(live.clone());
        if let Some(previous) = previous {
            close_in_background(previous);
        }
        let count = self.connects.fetch_add(1, Ordering::Relaxed) + 1;
        if count > 1 {
            metrics::counter!("herald_broker_reconnects_total").increment(1);
            tracing::info!(connection = %self.name, reconnects = count - 1, "reconnected to the broker");
        }
        Ok(live)
    }

    /// Drops `live` after an error that suggests it is dead (e.g. a confirm
    /// that never came), so the next caller reconnects.
    pub(crate) fn invalidate(&self, live: &Arc<Live>) {
        let mut guard = self.current.write().unwrap_or_else(|e| e.into_inner());
        if guard
            .as_ref()
            .is_some_and(|current| Arc::ptr_eq(current, live))
            && let Some(previous) = guard.take()
        {
            close_in_background(previous);
        }
    }

    /// Drops `live` like [`invalidate`](Self::invalidate), but only once it
    /// has been open for `min_age`: for errors that may also be the
    /// broker's steady answer (a nack from a full queue), so that they
    /// cost at most one reconnect per `min_age`, not one per publish.
    pub(crate) fn invalidate_if_older(&self, live: &Arc<Live>, min_age: std::time::Duration) {
        if live.opened.elapsed() >= min_age {
            self.invalidate(live);
        }
    }

    /// Closes the connection (on shutdown).
    pub async fn close(&self) {
        let live = self
            .current
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(live) = live {
            let _ = live.connection.close(200, "shutting down".into()).await;
        }
    }
}

fn close_in_background(live: Arc<Live>) {
    tokio::spawn(async move {
        let _ = live.connection.close(320, "replaced".into()).await;
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_frame_size_is_herald_s_unless_the_url_names_one() {
        let uri = broker_uri("amqp://guest:guest@127.0.0.1:5672/%2f").unwrap();
        assert_eq!(uri.query.frame_max, Some(DEFAULT_FRAME_MAX));
        assert_eq!(uri.authority.userinfo.password, "guest");
        let uri = broker_uri("amqp://127.0.0.1/%2f?frame_max=131072&heartbeat=30").unwrap();
        assert_eq!(uri.query.frame_max, Some(131_072));
        assert_eq!(uri.query.heartbeat, Some(30));
    }

    #[test]
    fn a_list_names_the_nodes_of_a_cluster() {
        let brokers = Brokers::parse(
            "amqp://u:s3cret@10.0.0.1:5672/%2f, amqp://u:s3cret@10.0.0.2/%2f,amqps://u:s3cret@mq3:5671/shop",
        )
        .unwrap();
        assert_eq!(
            brokers.names().collect::<Vec<_>>(),
            ["10.0.0.1:5672", "10.0.0.2:5672", "mq3:5671"]
        );
        assert!(!format!("{brokers:?}").contains("s3cret"));
        assert_eq!(brokers.nodes[2].0.vhost, "shop");
        assert!(
            brokers
                .nodes
                .iter()
                .all(|(uri, _)| uri.query.frame_max == Some(DEFAULT_FRAME_MAX))
        );
    }

    #[test]
    fn a_bad_list_says_which_url_to_fix_without_its_password() {
        for (list, says) in [
            ("amqp://a/%2f,,amqp://b/%2f", "URL 2 of the list is empty"),
            ("amqp://a/%2f,", "URL 2 of the list is empty"),
            ("", "URL 1 of the list is empty"),
            (
                "amqp://a/%2f,amqp://u:s3cret@b/%2f?frame_max=x",
                "URL 2 of the list",
            ),
        ] {
            let err = Brokers::parse(list).unwrap_err();
            assert!(matches!(err, QueueError::InvalidUrl(_)), "{err:?}");
            let text = err.to_string();
            assert!(text.contains(says), "{list:?}: {text}");
            assert!(!text.contains("s3cret"), "{text}");
        }
    }

    #[tokio::test]
    async fn connecting_tries_every_node_and_moves_past_the_one_it_got() {
        // Two closed ports around the machine's broker: whichever node the
        // cursor starts at, the connect ends on the live one (index 1) and
        // the cursor then points past it.
        let closed = || {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let (a, b) = (closed(), closed());
        let live = std::env::var("HERALD_TEST_AMQP_URL")
            .unwrap_or_else(|_| crate::DEFAULT_AMQP_URL.to_owned());
        let list = format!("amqp://127.0.0.1:{a}/%2f,{live},amqp://127.0.0.1:{b}/%2f");
        for start in 0..3 {
            let config = QueueConfig::new(list.clone(), "unused");
            let cursor = NodeCursor::at(start);
            let connection = connect_via(&config, "cursor-test", &cursor).await.unwrap();
            assert_eq!(cursor.0.load(Ordering::Relaxed) % 3, 2, "start {start}");
            let _ = connection.close(200, "done".into()).await;
        }
        let config = QueueConfig::new(
            format!("amqp://127.0.0.1:{a}/%2f,amqp://u:s3cret@127.0.0.1:{b}/%2f"),
            "unused",
        );
        let err = connect_via(&config, "cursor-test", &NodeCursor::at(0))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("no node of the 2 answered"), "{err}");
        assert!(
            err.contains(&format!("127.0.0.1:{a}")) && err.contains(&format!("127.0.0.1:{b}")),
            "{err}"
        );
        assert!(!err.contains("s3cret"), "{err}");
    }

    #[test]
    fn an_invalid_url_is_named_without_its_password() {
        for url in [
            "mailto:user:s3cret@example.com",
            "amqp://user:s3cret@host/%2f?frame_max=x",
        ] {
            let err = broker_uri(url).unwrap_err();
            assert!(matches!(err, QueueError::InvalidUrl(_)), "{err:?}");
            assert!(!err.to_string().contains("s3cret"), "{err}");
        }
    }
}
