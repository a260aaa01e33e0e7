//! HTTP/1.1 by hand over a plain `std` TCP stream: for what a client library
//! hides (the `Host` header, a half-sent head, a connection's fate after an
//! answer) and for threads inside a network namespace, where only sockets
//! that thread opens belong.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// One answer.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// Header names (lower case) and values, in order.
    pub headers: Vec<(String, String)>,
    /// The body as text.
    pub body: String,
}

impl Reply {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A request: `method path`, `Host: host`, the extra headers, and `body`
/// (with its `Content-Length` when not empty).
pub fn request(
    method: &str,
    path: &str,
    host: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> String {
    let mut r = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n");
    for (k, v) in headers {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() {
        r.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    r.push_str("\r\n");
    r.push_str(body);
    r
}

/// Opens a connection to `addr` with a 10 s read timeout.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connects");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Sends `raw` on a new connection and reads the answer.
pub fn exchange(addr: SocketAddr, raw: &str) -> Reply {
    let mut s = connect(addr);
    s.write_all(raw.as_bytes()).unwrap();
    read_reply(&mut s).expect("an answer")
}

/// `GET path` with `Host: host` and extra headers, on a new connection.
pub fn get(addr: SocketAddr, path: &str, host: &str, headers: &[(&str, &str)]) -> Reply {
    exchange(addr, &request("GET", path, host, headers, ""))
}

/// Reads one answer from `s` (its head, then `Content-Length` bytes, or
/// everything until the server closes); `None` if the connection closes
/// before a head arrives.
pub fn read_reply(s: &mut TcpStream) -> Option<Reply> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => buf.push(byte[0]),
            _ => return None,
        }
    }
    let head = String::from_utf8_lossy(&buf).to_string();
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok());
    let mut body = Vec::new();
    match len {
        Some(n) => {
            body.resize(n, 0);
            s.read_exact(&mut body).ok()?;
        }
        None => {
            let _ = s.read_to_end(&mut body);
        }
    }
    Some(Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).to_string(),
    })
}

/// Whether the server has closed `s`: a read sees the end (or a reset)
/// within the stream's read timeout rather than timing out.
pub fn closed_by_server(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 64];
    match s.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
        ),
    }
}
