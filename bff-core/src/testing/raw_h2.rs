//! An HTTP/2 client that writes frames exactly as a test says, hostile ones included (a zero
//! window, PINGs and no request, a header block never finished), and reads the server's frames
//! as they come. It understands nothing: HPACK is written as literals, and read not at all.

use std::io;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Frame types and flags (RFC 9113 §6), and the settings a test sets.
pub mod frame {
    /// DATA.
    pub const DATA: u8 = 0x0;
    /// HEADERS.
    pub const HEADERS: u8 = 0x1;
    /// RST_STREAM.
    pub const RST_STREAM: u8 = 0x3;
    /// SETTINGS.
    pub const SETTINGS: u8 = 0x4;
    /// PING.
    pub const PING: u8 = 0x6;
    /// GOAWAY.
    pub const GOAWAY: u8 = 0x7;
    /// WINDOW_UPDATE.
    pub const WINDOW_UPDATE: u8 = 0x8;
    /// CONTINUATION.
    pub const CONTINUATION: u8 = 0x9;
    /// END_STREAM (DATA, HEADERS).
    pub const END_STREAM: u8 = 0x1;
    /// ACK (SETTINGS, PING).
    pub const ACK: u8 = 0x1;
    /// END_HEADERS (HEADERS, CONTINUATION).
    pub const END_HEADERS: u8 = 0x4;
    /// SETTINGS_INITIAL_WINDOW_SIZE.
    pub const INITIAL_WINDOW_SIZE: u16 = 0x4;
    /// The `PROTOCOL_ERROR` error code.
    pub const PROTOCOL_ERROR: u32 = 0x1;
    /// The `REFUSED_STREAM` error code.
    pub const REFUSED_STREAM: u32 = 0x7;
    /// The `CANCEL` error code.
    pub const CANCEL: u32 = 0x8;
    /// The `ENHANCE_YOUR_CALM` error code.
    pub const ENHANCE_YOUR_CALM: u32 = 0xb;

    /// The most a frame's 24-bit length can say.
    pub const MAX_PAYLOAD: usize = 0x00ff_ffff;

    /// One frame's bytes, for a test that writes many in one piece ([`RawH2::write_raw`]).
    /// Panics on a payload over [`MAX_PAYLOAD`], which no frame can carry.
    ///
    /// [`RawH2::write_raw`]: super::RawH2::write_raw
    pub fn encode(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        assert!(payload.len() <= MAX_PAYLOAD, "a frame's payload is at most {MAX_PAYLOAD} bytes");
        let length = payload.len() as u32;
        let mut bytes = Vec::with_capacity(9 + payload.len());
        bytes.extend_from_slice(&length.to_be_bytes()[1..]);
        bytes.push(kind);
        bytes.push(flags);
        bytes.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
        bytes.extend_from_slice(payload);
        bytes
    }
}

/// The client connection preface.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// One frame the server sent.
#[derive(Debug, Clone)]
pub struct RawFrame {
    /// Its type ([`frame`]).
    pub kind: u8,
    /// Its flags.
    pub flags: u8,
    /// Its stream.
    pub stream: u32,
    /// Its payload.
    pub payload: Bytes,
}

impl RawFrame {
    /// The error code of a RST_STREAM or GOAWAY.
    pub fn error_code(&self) -> Option<u32> {
        let at = match self.kind {
            frame::RST_STREAM => 0,
            frame::GOAWAY => 4,
            _ => return None,
        };
        let bytes = self.payload.get(at..at + 4)?;
        Some(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }
}

/// An HTTP/2 client that writes frames exactly as a test says and reads the server's as they come.
#[derive(Debug)]
pub struct RawH2<IO> {
    io: IO,
    read: BytesMut,
}

impl<IO: AsyncRead + AsyncWrite + Unpin> RawH2<IO> {
    /// Sends the preface and a SETTINGS frame of `settings` (id, value) on `io`.
    pub async fn handshake(io: IO, settings: &[(u16, u32)]) -> io::Result<Self> {
        let mut client = Self { io, read: BytesMut::new() };
        client.io.write_all(PREFACE).await?;
        let mut payload = Vec::new();
        for (id, value) in settings {
            payload.extend_from_slice(&id.to_be_bytes());
            payload.extend_from_slice(&value.to_be_bytes());
        }
        client.send(frame::SETTINGS, 0, 0, &payload).await?;
        Ok(client)
    }

    /// A client that sends nothing yet (for a preface written by hand).
    pub fn unstarted(io: IO) -> Self {
        Self { io, read: BytesMut::new() }
    }

    /// Writes `bytes` as they are.
    pub async fn write_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.io.write_all(bytes).await
    }

    /// Writes one frame.
    pub async fn send(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) -> io::Result<()> {
        if payload.len() > frame::MAX_PAYLOAD {
            return Err(io::Error::other("a frame's payload is at most 16 MiB"));
        }
        self.io.write_all(&frame::encode(kind, flags, stream, payload)).await
    }

    /// A whole `GET path` on `stream` (odd, increasing), with `headers` after the pseudo-headers.
    pub async fn get(&mut self, stream: u32, path: &str, headers: &[(&str, &str)]) -> io::Result<()> {
        let block = header_block(path, headers);
        self.send(frame::HEADERS, frame::END_HEADERS | frame::END_STREAM, stream, &block).await
    }

    /// A PING with `data`.
    pub async fn ping(&mut self, data: [u8; 8]) -> io::Result<()> {
        self.send(frame::PING, 0, 0, &data).await
    }

    /// A WINDOW_UPDATE of `increment` on `stream` (0: the connection).
    pub async fn window_update(&mut self, stream: u32, increment: u32) -> io::Result<()> {
        self.send(frame::WINDOW_UPDATE, 0, stream, &increment.to_be_bytes()).await
    }

    /// The next frame from the server (a SETTINGS frame is acknowledged on the way); `None`
    /// once the server closed the connection.
    pub async fn next(&mut self) -> io::Result<Option<RawFrame>> {
        loop {
            if self.read.len() >= 9 {
                let length =
                    usize::from(self.read[0]) << 16 | usize::from(self.read[1]) << 8 | usize::from(self.read[2]);
                if self.read.len() >= 9 + length {
                    let mut head = self.read.split_to(9);
                    let kind = head[3];
                    let flags = head[4];
                    head.advance(5);
                    let stream = head.get_u32() & 0x7fff_ffff;
                    let payload = self.read.split_to(length).freeze();
                    if kind == frame::SETTINGS && flags & frame::ACK == 0 {
                        // The server may be closing already; what it sent is still read.
                        let _ = self.send(frame::SETTINGS, frame::ACK, 0, &[]).await;
                    }
                    return Ok(Some(RawFrame { kind, flags, stream, payload }));
                }
            }
            match self.io.read_buf(&mut self.read).await {
                Ok(0) => return Ok(None),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(None),
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads frames until the server closes the connection, returning them.
    pub async fn until_closed(&mut self) -> io::Result<Vec<RawFrame>> {
        let mut frames = Vec::new();
        while let Some(frame) = self.next().await? {
            frames.push(frame);
        }
        Ok(frames)
    }
}

/// An HPACK block of literals without indexing (RFC 7541 §6.2.2) for a GET of `path`.
pub fn header_block(path: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut block = Vec::new();
    let pseudo = [(":method", "GET"), (":scheme", "http"), (":path", path), (":authority", "bff")];
    for (name, value) in pseudo.iter().chain(headers) {
        block.push(0x00);
        literal(&mut block, name.as_bytes());
        literal(&mut block, value.as_bytes());
    }
    block
}

/// A string literal: its length as a 7-bit-prefix integer (no Huffman), then its bytes.
fn literal(out: &mut Vec<u8>, text: &[u8]) {
    let mut length = text.len();
    if length < 127 {
        out.push(length as u8);
    } else {
        out.push(127);
        length -= 127;
        while length >= 128 {
            out.push((length % 128) as u8 | 0x80);
            length /= 128;
        }
        out.push(length as u8);
    }
    out.extend_from_slice(text);
}
