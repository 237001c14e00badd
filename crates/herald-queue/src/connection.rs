//! One AMQP connection with a few confirm-mode channels, re-established on
//! demand after the broker went away.
//!
//! lapin's own auto-recovery gives up after a fixed number of tries and
//! replays state we do not need; Herald instead reconnects lazily: every
//! caller that finds the connection broken triggers (or waits for) one
//! reconnect, and a caller that cannot get a connection gets an error at once
//! — which ingest answers as UNAVAILABLE, never as a false OK.

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

/// Opens one AMQP connection, bounded by the configured connect timeout.
pub async fn connect(config: &QueueConfig, name: &str) -> Result<Connection, QueueError> {
    let uri = broker_uri(config.amqp_url.expose())?;
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    match tokio::time::timeout(
        config.connect_timeout,
        Connection::connect_uri(uri, properties),
    )
    .await
    {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(source)) => Err(QueueError::Unavailable {
            reason: format!("connecting failed: {source}"),
            source: Some(source),
        }),
        Err(_) => Err(QueueError::Unavailable {
            reason: format!("no connection within {:?}", config.connect_timeout),
            source: None,
        }),
    }
}

pub(crate) struct Live {
    connection: Connection,
    channels: Vec<Channel>,
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
        let connection = connect(&self.config, &self.name).await?;
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
        let live = Arc::new(Live {
            connection,
            channels,
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
