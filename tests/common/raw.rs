//! A bare WebSocket client over a TCP socket, for what a well-behaved
//! client library will not do: fragments of our choosing, never answering
//! pings, vanishing without a close, handshakes left half-sent.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use tickwire::wire::frame;

pub const TEXT: u8 = 0x1;
pub const CONTINUATION: u8 = 0x0;
pub const CLOSE: u8 = 0x8;
pub const PING: u8 = 0x9;
pub const PONG: u8 = 0xA;

/// Connects to `addr` from `source` (any 127.0.0.0/8 address works on
/// Linux loopback without configuration).
pub async fn connect_from(source: IpAddr, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    socket.connect(addr).await
}

pub fn upgrade_request(path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: tickwire\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Protocol: tickwire.v1\r\n\r\n"
    )
}

/// How long a read that expects an answer waits for it: a server that
/// sends nothing fails the test instead of hanging it.
pub const READ_LIMIT: Duration = Duration::from_secs(10);

/// Reads an HTTP response head (through the blank line); returns it and
/// any bytes read past it. An error (`TimedOut`) if it has not come within
/// [`READ_LIMIT`].
pub async fn read_head(s: &mut TcpStream) -> std::io::Result<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    let head = async {
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let rest = buf.split_off(end + 4);
                return Ok((String::from_utf8_lossy(&buf).into_owned(), rest));
            }
            let n = s.read(&mut chunk).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(READ_LIMIT, head)
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}

/// The status code of a response head.
pub fn status(head: &str) -> u16 {
    head.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// A header's value in a response head (name case-insensitive).
pub fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// A client frame, masked as RFC 6455 requires.
pub fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut f = vec![u8::from(fin) << 7 | opcode];
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n if n <= 0xffff => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// An upgraded connection.
pub struct RawWs {
    pub stream: TcpStream,
    buf: Vec<u8>,
    /// Whether the last frame read had RSV1 set (permessage-deflate).
    pub last_rsv1: bool,
}

impl RawWs {
    /// Connects from `source` and upgrades `/ws`; panics if refused.
    pub async fn connect(source: IpAddr, addr: SocketAddr) -> RawWs {
        let stream = connect_from(source, addr).await.unwrap();
        RawWs::upgrade(stream).await.unwrap()
    }

    pub async fn upgrade(mut stream: TcpStream) -> std::io::Result<RawWs> {
        stream.write_all(upgrade_request("/ws").as_bytes()).await?;
        let (head, buf) = read_head(&mut stream).await?;
        if status(&head) != 101 {
            return Err(std::io::Error::other(head));
        }
        Ok(RawWs {
            stream,
            buf,
            last_rsv1: false,
        })
    }

    /// Upgrades `/ws` offering `extensions` (a `Sec-WebSocket-Extensions`
    /// value); returns the connection and the response head.
    pub async fn upgrade_offering(
        mut stream: TcpStream,
        extensions: &str,
    ) -> std::io::Result<(RawWs, String)> {
        let req = upgrade_request("/ws").replace(
            "\r\n\r\n",
            &format!("\r\nSec-WebSocket-Extensions: {extensions}\r\n\r\n"),
        );
        stream.write_all(req.as_bytes()).await?;
        let (head, buf) = read_head(&mut stream).await?;
        if status(&head) != 101 {
            return Err(std::io::Error::other(head));
        }
        let ws = RawWs {
            stream,
            buf,
            last_rsv1: false,
        };
        Ok((ws, head))
    }

    /// Sends a raw first header byte (FIN, RSV bits, opcode) with `payload`.
    pub async fn send_with_bits(&mut self, first: u8, payload: &[u8]) {
        let mut f = frame(true, 0, payload);
        f[0] = first;
        self.stream.write_all(&f).await.unwrap();
    }

    pub async fn send(&mut self, fin: bool, opcode: u8, payload: &[u8]) {
        self.stream
            .write_all(&frame(fin, opcode, payload))
            .await
            .unwrap();
    }

    pub async fn send_text(&mut self, text: &str) {
        self.send(true, TEXT, text.as_bytes()).await;
    }

    async fn fill(&mut self, n: usize) -> std::io::Result<()> {
        let mut chunk = [0u8; 4096];
        while self.buf.len() < n {
            let got = self.stream.read(&mut chunk).await?;
            if got == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..got]);
        }
        Ok(())
    }

    /// The next server frame: (opcode, payload); Err at EOF or reset.
    /// Fails the test if none has come within [`READ_LIMIT`].
    pub async fn read_frame(&mut self) -> std::io::Result<(u8, Vec<u8>)> {
        tokio::time::timeout(READ_LIMIT, self.next_frame())
            .await
            .unwrap_or_else(|_| panic!("no frame from the server within {READ_LIMIT:?}"))
    }

    /// Reads until the connection ends, answering each ping with its pong
    /// as a client library does while it waits. No deadline: this is for a
    /// background task that holds a connection open until the test aborts
    /// it, not a wait for something to happen.
    pub async fn answer_pings(mut self) {
        while let Ok((op, payload)) = self.next_frame().await {
            if op == PING {
                self.send(true, PONG, &payload).await;
            }
        }
    }

    /// The next server frame, however long it takes.
    async fn next_frame(&mut self) -> std::io::Result<(u8, Vec<u8>)> {
        let h = loop {
            match frame::parse(&self.buf) {
                Some(h) => break h,
                None => self.fill(self.buf.len() + 1).await?,
            }
        };
        let (opcode, header, len) = (h.opcode, h.header_len, h.payload_len as usize);
        self.last_rsv1 = self.buf[0] & 0x40 != 0;
        self.fill(header + len).await?;
        let payload = self.buf[header..header + len].to_vec();
        self.buf.drain(..header + len);
        Ok((opcode, payload))
    }

    /// Reads frames until a close (code, reason) or the socket ends (None);
    /// returns them with the text messages seen before it.
    pub async fn read_until_close(
        &mut self,
        limit: Duration,
    ) -> (Option<(u16, String)>, Vec<String>) {
        let mut texts = Vec::new();
        let read = async {
            loop {
                match self.next_frame().await {
                    Ok((CLOSE, p)) if p.len() >= 2 => {
                        let code = u16::from_be_bytes([p[0], p[1]]);
                        return Some((code, String::from_utf8_lossy(&p[2..]).into_owned()));
                    }
                    Ok((CLOSE, _)) | Err(_) => return None,
                    Ok((TEXT, p)) => texts.push(String::from_utf8(p).unwrap()),
                    Ok(_) => {}
                }
            }
        };
        let close = tokio::time::timeout(limit, read)
            .await
            .expect("the server closed within the limit");
        (close, texts)
    }
}
