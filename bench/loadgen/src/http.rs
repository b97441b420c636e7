//! A minimal HTTP/1.1 keep-alive client for `POST /api/v1/...` (no client library needed for
//! one request shape). Handles `Content-Length` and chunked bodies.

use std::net::SocketAddr;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufStream};
use tokio::net::TcpStream;

pub struct Client {
    addr: SocketAddr,
    conn: Option<BufStream<TcpStream>>,
}

impl Client {
    pub fn new(addr: SocketAddr) -> Self {
        Self { addr, conn: None }
    }

    /// Sends one POST; returns the status and the body. Reconnects when the server closed.
    pub async fn post(
        &mut self,
        path: &str,
        bearer: &str,
        body: &str,
    ) -> anyhow::Result<(u16, Vec<u8>)> {
        self.request("POST", path, bearer, body).await
    }

    /// Sends one GET (no body).
    pub async fn get(&mut self, path: &str, bearer: &str) -> anyhow::Result<(u16, Vec<u8>)> {
        self.request("GET", path, bearer, "").await
    }

    async fn request(
        &mut self,
        method: &str,
        path: &str,
        bearer: &str,
        body: &str,
    ) -> anyhow::Result<(u16, Vec<u8>)> {
        if self.conn.is_none() {
            let s = TcpStream::connect(self.addr)
                .await
                .context("http connect")?;
            s.set_nodelay(true)?;
            self.conn = Some(BufStream::new(s));
        }
        let res = self.exchange(method, path, bearer, body).await;
        if res.is_err() {
            self.conn = None;
        }
        res
    }

    async fn exchange(
        &mut self,
        method: &str,
        path: &str,
        bearer: &str,
        body: &str,
    ) -> anyhow::Result<(u16, Vec<u8>)> {
        let c = self.conn.as_mut().expect("connected");
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {bearer}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        c.write_all(req.as_bytes()).await?;
        c.flush().await?;
        let mut line = String::new();
        if c.read_line(&mut line).await? == 0 {
            bail!("connection closed before the response");
        }
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("bad status line {line:?}"))?;
        let (mut length, mut chunked, mut close) = (None, false, false);
        loop {
            line.clear();
            if c.read_line(&mut line).await? == 0 {
                bail!("connection closed in the headers");
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
                match k.as_str() {
                    "content-length" => length = v.parse::<usize>().ok(),
                    "transfer-encoding" => chunked = v.eq_ignore_ascii_case("chunked"),
                    "connection" => close = v.eq_ignore_ascii_case("close"),
                    _ => {}
                }
            }
        }
        let mut out = Vec::new();
        if chunked {
            loop {
                line.clear();
                c.read_line(&mut line).await?;
                let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                    .with_context(|| format!("bad chunk size {line:?}"))?;
                let at = out.len();
                out.resize(at + size + 2, 0);
                c.read_exact(&mut out[at..]).await?;
                out.truncate(at + size);
                if size == 0 {
                    break;
                }
            }
        } else if let Some(n) = length {
            out.resize(n, 0);
            c.read_exact(&mut out).await?;
        } else {
            c.read_to_end(&mut out).await?;
            close = true;
        }
        if close {
            self.conn = None;
        }
        Ok((status, out))
    }
}
