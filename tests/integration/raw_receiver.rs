//! A receiver on a plain `TcpListener` at 127.0.0.1 that misbehaves on
//! purpose. Each connection runs on its own thread, and each request read on
//! it takes the next behaviour from a script (then the default behaviour). Only
//! `Answer` keeps the connection open for another request, because hookd
//! keeps connections alive. Every behaviour ends by itself: when the peer
//! closes, after a bounded number of bytes, or after `MAX_BEHAVIOUR`.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::helpers::{Received, wait_until};

/// Maximum time one connection's behaviour runs.
pub const MAX_BEHAVIOUR: Duration = Duration::from_secs(60);

/// The `Content-Length` a flood announces: 500 MB.
pub const FLOOD_BYTES: u64 = 500_000_000;

/// Body length a trickle announces. It sends one byte per second.
const TRICKLE_BYTES: usize = 60;

/// Bytes per write while flooding.
const FLOOD_CHUNK: usize = 64 * 1024;

/// What the receiver does after reading a request.
#[derive(Debug, Clone)]
pub enum Behaviour {
    /// Sends `status` with these headers and the body `ok`, then reads the
    /// next request on the same connection.
    Answer {
        status: u16,
        headers: Vec<(String, String)>,
    },
    /// Sends `status` with a `Retry-After` HTTP date at least `ahead` from
    /// now (rounded up to a whole second), then closes.
    RetryAfterDate { status: u16, ahead: Duration },
    /// Waits `delay`, then sends `status` and closes.
    AnswerLate { delay: Duration, status: u16 },
    /// Sends nothing and keeps the connection open until the peer closes it.
    Silent,
    /// Sends a 200 head with `Content-Length: 60`, then one body byte per
    /// second until the peer closes.
    Trickle,
    /// Sends `status` and a body of `FLOOD_BYTES` (with a `Content-Length`,
    /// or chunked and never finished) as fast as the peer reads it, until
    /// the peer closes.
    Flood { status: u16, chunked: bool },
    /// Closes the connection without sending a response.
    Hangup,
    /// Writes these bytes, then closes.
    Partial(&'static str),
}

impl From<u16> for Behaviour {
    fn from(status: u16) -> Self {
        Behaviour::Answer {
            status,
            headers: Vec::new(),
        }
    }
}

/// How one connection ended.
#[derive(Debug, Clone)]
pub struct Finished {
    /// Response bytes written, head included.
    pub bytes_written: u64,
    /// True when a write failed or a read reached the end of the stream,
    /// meaning the peer closed the connection.
    pub peer_closed: bool,
}

struct Shared {
    received: Mutex<Vec<Received>>,
    finished: Mutex<Vec<Finished>>,
    script: Mutex<VecDeque<Behaviour>>,
    default: Mutex<Behaviour>,
    stopping: AtomicBool,
}

/// Handle to a running receiver. Dropping it stops the accepting thread.
pub struct RawReceiver {
    pub address: SocketAddr,
    shared: Arc<Shared>,
}

impl RawReceiver {
    /// Starts a receiver that handles every request with `default` unless the
    /// script sets another behaviour.
    pub fn start(default: impl Into<Behaviour>) -> RawReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let address = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            received: Mutex::default(),
            finished: Mutex::default(),
            script: Mutex::default(),
            default: Mutex::new(default.into()),
            stopping: AtomicBool::new(false),
        });
        let accepting = shared.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if accepting.stopping.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let connection = accepting.clone();
                std::thread::spawn(move || {
                    let finished = serve(&connection, stream);
                    connection.finished.lock().unwrap().push(finished);
                });
            }
        });
        RawReceiver { address, shared }
    }

    /// Sets the behaviours of the next requests, in order.
    pub fn script(&self, behaviours: impl IntoIterator<Item = impl Into<Behaviour>>) {
        self.shared
            .script
            .lock()
            .unwrap()
            .extend(behaviours.into_iter().map(Into::into));
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{path_and_query}", self.address)
    }

    /// Returns every request read so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }

    /// Waits until at least `count` requests have arrived.
    pub fn wait_for(&self, count: usize) -> Vec<Received> {
        wait_until(&format!("{count} requests reach the raw receiver"), || {
            self.received().len() >= count
        });
        self.received()
    }

    /// Returns the connections whose behaviour has ended.
    pub fn finished(&self) -> Vec<Finished> {
        self.shared.finished.lock().unwrap().clone()
    }
}

impl Drop for RawReceiver {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // Wake the accepting thread so it checks the flag and returns.
        let _ = TcpStream::connect_timeout(&self.address, Duration::from_secs(1));
    }
}

/// Reads one request. Returns None when the peer closed the connection or
/// sent a malformed request.
fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Received> {
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).ok()? == 0 {
        return None;
    }
    let path = request_line.split_whitespace().nth(1)?.to_owned();
    let mut headers = HashMap::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
    }
    let length: usize = headers
        .get("content-length")
        .and_then(|value| value.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Received {
        at: Instant::now(),
        path,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// Counts written bytes and remembers whether the peer went away.
struct Writer {
    stream: TcpStream,
    bytes_written: u64,
    peer_closed: bool,
}

impl Writer {
    /// Writes all of `bytes` and returns false once the peer is gone. A write
    /// that timed out because the peer reads slowly is retried until `until`.
    fn send(&mut self, bytes: &[u8], until: Instant) -> bool {
        let mut rest = bytes;
        while !rest.is_empty() {
            match self.stream.write(rest) {
                Ok(0) => {
                    self.peer_closed = true;
                    return false;
                }
                Ok(written) => {
                    self.bytes_written += written as u64;
                    rest = &rest[written..];
                }
                Err(error)
                    if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
                        && Instant::now() < until => {}
                Err(error) if error.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    self.peer_closed = true;
                    return false;
                }
            }
        }
        true
    }

    fn finished(self) -> Finished {
        Finished {
            bytes_written: self.bytes_written,
            peer_closed: self.peer_closed,
        }
    }
}

fn serve(shared: &Shared, stream: TcpStream) -> Finished {
    let until = Instant::now() + MAX_BEHAVIOUR;
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let mut writer = Writer {
        stream: stream.try_clone().expect("clone the connection"),
        bytes_written: 0,
        peer_closed: false,
    };
    let mut reader = BufReader::new(stream);
    loop {
        let Some(left) = until.checked_duration_since(Instant::now()) else {
            return writer.finished();
        };
        let _ = reader
            .get_ref()
            .set_read_timeout(Some(left.max(Duration::from_millis(1))));
        let Some(request) = read_request(&mut reader) else {
            writer.peer_closed = true;
            return writer.finished();
        };
        shared.received.lock().unwrap().push(request);
        let behaviour = shared
            .script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| shared.default.lock().unwrap().clone());
        match &behaviour {
            Behaviour::Answer { status, headers } => {
                let head = head(*status, headers, "Content-Length: 2");
                if !writer.send(format!("{head}ok").as_bytes(), until) || Instant::now() >= until {
                    return writer.finished();
                }
                // Keep-alive: serve the next request on this connection.
            }
            Behaviour::RetryAfterDate { status, ahead } => {
                let retry_after = vec![("Retry-After".to_owned(), http_date_after(*ahead))];
                let head = head(
                    *status,
                    &retry_after,
                    "Content-Length: 2\r\nConnection: close",
                );
                writer.send(format!("{head}ok").as_bytes(), until);
                return writer.finished();
            }
            Behaviour::AnswerLate { delay, status } => {
                std::thread::sleep((*delay).min(MAX_BEHAVIOUR));
                let head = head(*status, &[], "Content-Length: 2\r\nConnection: close");
                writer.send(format!("{head}ok").as_bytes(), until);
                return writer.finished();
            }
            Behaviour::Silent => {
                wait_for_close(&mut reader, &mut writer, until);
                return writer.finished();
            }
            Behaviour::Trickle => {
                let length = format!("Content-Length: {TRICKLE_BYTES}");
                if writer.send(head(200, &[], &length).as_bytes(), until) {
                    for _ in 0..TRICKLE_BYTES {
                        std::thread::sleep(Duration::from_secs(1));
                        if !writer.send(b"x", until) || Instant::now() >= until {
                            break;
                        }
                    }
                }
                return writer.finished();
            }
            Behaviour::Flood { status, chunked } => {
                flood(&mut writer, *status, *chunked, until);
                return writer.finished();
            }
            Behaviour::Hangup => return writer.finished(),
            Behaviour::Partial(bytes) => {
                writer.send(bytes.as_bytes(), until);
                return writer.finished();
            }
        }
    }
}

/// Formats a response head, ending with the blank line.
fn head(status: u16, headers: &[(String, String)], framing: &str) -> String {
    let mut head = format!("HTTP/1.1 {status} Hostile\r\n{framing}\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    head
}

/// Formats an HTTP date at least `ahead` from now, rounded up to the next
/// whole second because the format has no fractions.
pub fn http_date_after(ahead: Duration) -> String {
    let since_epoch = (SystemTime::now() + ahead)
        .duration_since(UNIX_EPOCH)
        .unwrap();
    let whole = since_epoch.as_secs() + u64::from(since_epoch.subsec_nanos() > 0);
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(whole))
}

/// Reads and drops whatever the peer sends until it closes the connection
/// or `until` passes.
fn wait_for_close(reader: &mut BufReader<TcpStream>, writer: &mut Writer, until: Instant) {
    let _ = reader
        .get_ref()
        .set_read_timeout(Some(Duration::from_secs(1)));
    let mut buffer = [0u8; 1024];
    while Instant::now() < until {
        match reader.read(&mut buffer) {
            Ok(0) => {
                writer.peer_closed = true;
                return;
            }
            Ok(_) => {}
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            Err(_) => {
                writer.peer_closed = true;
                return;
            }
        }
    }
}

/// Writes a `status` head and then body bytes as fast as the peer takes
/// them, stopping when the peer closes, after `FLOOD_BYTES`, or at `until`.
fn flood(writer: &mut Writer, status: u16, chunked: bool, until: Instant) {
    let framing = if chunked {
        "Transfer-Encoding: chunked".to_owned()
    } else {
        format!("Content-Length: {FLOOD_BYTES}")
    };
    if !writer.send(head(status, &[], &framing).as_bytes(), until) {
        return;
    }
    let payload = vec![b'x'; FLOOD_CHUNK];
    let chunk = if chunked {
        let mut framed = format!("{FLOOD_CHUNK:x}\r\n").into_bytes();
        framed.extend_from_slice(&payload);
        framed.extend_from_slice(b"\r\n");
        framed
    } else {
        payload
    };
    let mut body_sent: u64 = 0;
    while body_sent < FLOOD_BYTES && Instant::now() < until {
        let piece = if chunked {
            &chunk[..]
        } else {
            // Stop exactly at the announced length.
            let left = (FLOOD_BYTES - body_sent).min(FLOOD_CHUNK as u64) as usize;
            &chunk[..left]
        };
        if !writer.send(piece, until) {
            return;
        }
        body_sent += FLOOD_CHUNK as u64;
    }
}
