//! Receivers that misbehave the way real targets do, on raw TCP so that
//! they can do what a well-behaved HTTP library would not: hang after
//! reading the request, trickle the answer byte by byte, reset the
//! connection, or send a 50 MiB body.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// How a pathological receiver answers each request.
#[derive(Debug, Clone)]
pub enum Misbehaviour {
    /// Reads the request, then never answers (the connection stays open).
    Hang,
    /// Sends the status line and then one header byte every `every`,
    /// forever: the answer never completes.
    Trickle { every: Duration },
    /// Reads the request, then resets the connection (RST, no answer).
    Reset,
    /// A complete answer with this status and these extra headers.
    Status {
        status: u16,
        headers: Vec<(String, String)>,
    },
    /// `200 OK` with a body of this many bytes.
    HugeBody { bytes: usize },
    /// The n-th request gets the n-th answer (status, extra headers); the
    /// last answer repeats.
    Script(Vec<(u16, Vec<(String, String)>)>),
}

/// A running pathological receiver.
#[derive(Clone)]
pub struct Pathological {
    pub addr: std::net::SocketAddr,
    requests: Arc<AtomicUsize>,
    arrivals: Arc<Mutex<Vec<Instant>>>,
}

impl Pathological {
    pub async fn start(behaviour: Misbehaviour) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind pathological receiver");
        let addr = listener.local_addr().expect("address");
        let requests = Arc::new(AtomicUsize::new(0));
        let arrivals: Arc<Mutex<Vec<Instant>>> = Arc::default();
        let seen = Seen {
            requests: requests.clone(),
            arrivals: arrivals.clone(),
        };
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let behaviour = behaviour.clone();
                let seen = seen.clone();
                tokio::spawn(async move {
                    let _ = serve(stream, &behaviour, &seen).await;
                });
            }
        });
        Self {
            addr,
            requests,
            arrivals,
        }
    }

    /// When each complete request arrived, in order.
    pub fn arrivals(&self) -> Vec<Instant> {
        self.arrivals.lock().expect("arrivals lock").clone()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Requests read completely so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// What a receiver counts and records.
#[derive(Clone)]
struct Seen {
    requests: Arc<AtomicUsize>,
    arrivals: Arc<Mutex<Vec<Instant>>>,
}

/// Writes a complete answer with a two-byte body.
async fn answer(
    stream: &mut TcpStream,
    status: u16,
    headers: &[(String, String)],
) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {status} Whatever\r\ncontent-length: 2\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\nno");
    stream.write_all(head.as_bytes()).await
}

/// Reads one HTTP/1.1 request (head and `Content-Length` body); `false` at
/// the end of the connection.
async fn read_request(reader: &mut BufReader<TcpStream>) -> std::io::Result<bool> {
    let mut content_length = 0usize;
    let mut first = true;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await? == 0 {
            return Ok(false);
        }
        if line == "\r\n" && !first {
            break;
        }
        first = false;
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            content_length = value.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; content_length];
    reader.read_exact(&mut body).await?;
    Ok(true)
}

async fn serve(stream: TcpStream, behaviour: &Misbehaviour, seen: &Seen) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(stream);
    while read_request(&mut reader).await? {
        let n = seen.requests.fetch_add(1, Ordering::SeqCst);
        seen.arrivals
            .lock()
            .expect("arrivals lock")
            .push(Instant::now());
        let stream = reader.get_mut();
        match behaviour {
            Misbehaviour::Hang => {
                // Keep the connection open and silent until the client gives up.
                let mut sink = [0u8; 1024];
                while stream.read(&mut sink).await? > 0 {}
                return Ok(());
            }
            Misbehaviour::Trickle { every } => {
                stream.write_all(b"HTTP/1.1 200 OK\r\n").await?;
                loop {
                    tokio::time::sleep(*every).await;
                    stream.write_all(b"X").await?;
                }
            }
            Misbehaviour::Reset => {
                // Linger 0 makes the close an RST instead of a FIN.
                stream.set_zero_linger()?;
                return Ok(());
            }
            Misbehaviour::Status { status, headers } => answer(stream, *status, headers).await?,
            Misbehaviour::Script(answers) => {
                if let Some((status, headers)) = answers.get(n).or(answers.last()) {
                    answer(stream, *status, headers).await?;
                }
            }
            Misbehaviour::HugeBody { bytes } => {
                let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {bytes}\r\n\r\n");
                stream.write_all(head.as_bytes()).await?;
                let chunk = vec![b'x'; 64 * 1024];
                let mut left = *bytes;
                while left > 0 {
                    let n = left.min(chunk.len());
                    // The sender stops reading after its cap and drops the
                    // connection; the write error ends this task.
                    stream.write_all(&chunk[..n]).await?;
                    left -= n;
                }
            }
        }
    }
    Ok(())
}
