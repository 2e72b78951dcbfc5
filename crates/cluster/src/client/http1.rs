//! HTTP/1.1 as a PBS command speaks it to the server: one request per connection, sent with
//! `connection: close`, the response read until its `content-length` is in or the server
//! closes, then parsed (the head by httparse, the body framed by `transfer-encoding: chunked`,
//! `content-length` or the close, as RFC 9112 §6.3 orders them). A command makes one request
//! and exits: an async runtime and a connection task only cost it time.

use std::io::{ErrorKind, Read};

/// Why a response could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HttpError {
    /// The status line or a header is malformed.
    #[error("malformed response head: {0}")]
    Head(String),
    /// The connection closed before the head or the body it announced was complete.
    #[error("the response ended early")]
    Incomplete,
    /// `content-length` is not a number.
    #[error("malformed content-length")]
    Length,
    /// A chunk of a chunked body is malformed.
    #[error("malformed chunked body")]
    Chunk,
}

/// A response: its status code and body.
#[derive(Debug, PartialEq, Eq)]
pub struct Response {
    /// The status code (200, 404 …).
    pub status: u16,
    /// The reason phrase (`OK`, `Not Found` …).
    pub reason: String,
    /// The body, its framing removed.
    pub body: Vec<u8>,
}

/// Most headers a response may have.
const MAX_HEADERS: usize = 64;

/// The bytes of a request for `path` with a JSON `body`, asking the server to close the
/// connection after its response.
pub fn request(method: &str, path: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "{method} {path} HTTP/1.1\r\nhost: hpcbox\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// Parses a whole response, as read until the server closed the connection.
pub fn parse_response(bytes: &[u8]) -> Result<Response, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut head = httparse::Response::new(&mut headers);
    let body_at = match head.parse(bytes) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Err(HttpError::Incomplete),
        Err(e) => return Err(HttpError::Head(e.to_string())),
    };
    let status = head.code.ok_or(HttpError::Incomplete)?;
    let reason = head.reason.unwrap_or_default().to_string();
    let rest = &bytes[body_at..];
    let headers = &*head.headers;
    let chunked = header(headers, "transfer-encoding")
        .last()
        .is_some_and(|v| {
            v.rsplit(',')
                .next()
                .is_some_and(|coding| coding.trim().eq_ignore_ascii_case("chunked"))
        });
    let body = if matches!(status, 100..=199 | 204 | 304) {
        Vec::new() // no body, whatever the headers say (RFC 9112 §6.3)
    } else if chunked {
        dechunk(rest)?
    } else if let Some(len) = header(headers, "content-length").next() {
        let len: usize = len.trim().parse().map_err(|_| HttpError::Length)?;
        rest.get(..len).ok_or(HttpError::Incomplete)?.to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Response {
        status,
        reason,
        body,
    })
}

/// Reads `stream` into `bytes` until they hold a response whose `content-length` says it is
/// whole (or a head no more bytes could mend), or the stream ends: a server that kept the
/// connection open could not hold a command. Other framings end at the close.
pub fn read_response(stream: &mut impl Read, bytes: &mut Vec<u8>) -> std::io::Result<()> {
    let mut chunk = [0u8; 16 << 10];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                bytes.extend_from_slice(&chunk[..n]);
                if sized_and_whole(bytes) {
                    return Ok(());
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Whether `bytes` are a response no further bytes would change: a malformed head, a head
/// whose status has no body (1xx, 204, 304), or a head with a `content-length` and that many
/// body bytes after it.
fn sized_and_whole(bytes: &[u8]) -> bool {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut head = httparse::Response::new(&mut headers);
    let body_at = match head.parse(bytes) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return false,
        Err(_) => return true,
    };
    if matches!(head.code, Some(100..=199 | 204 | 304)) {
        return true;
    }
    let chunked = header(head.headers, "transfer-encoding").next().is_some();
    let length = header(head.headers, "content-length").next();
    match (chunked, length.map(|v| v.trim().parse::<usize>())) {
        (false, Some(Ok(len))) => bytes.len() - body_at >= len,
        (false, Some(Err(_))) => true,
        _ => false,
    }
}

/// The values of the headers called `name`, in order.
fn header<'a>(
    headers: &'a [httparse::Header<'a>],
    name: &'a str,
) -> impl Iterator<Item = std::borrow::Cow<'a, str>> + 'a {
    headers
        .iter()
        .filter(move |h| h.name.eq_ignore_ascii_case(name))
        .map(|h| String::from_utf8_lossy(h.value))
}

/// The payload of a chunked body (trailers are ignored).
fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, HttpError> {
    let mut body = Vec::new();
    loop {
        let (used, size) = match httparse::parse_chunk_size(rest) {
            Ok(httparse::Status::Complete(found)) => found,
            Ok(httparse::Status::Partial) => return Err(HttpError::Incomplete),
            Err(_) => return Err(HttpError::Chunk),
        };
        rest = &rest[used..];
        if size == 0 {
            return Ok(body);
        }
        let size = usize::try_from(size).map_err(|_| HttpError::Chunk)?;
        let chunk = rest.get(..size).ok_or(HttpError::Incomplete)?;
        body.extend_from_slice(chunk);
        rest = match &rest[size..] {
            [b'\r', b'\n', after @ ..] => after,
            [] | [b'\r'] => return Err(HttpError::Incomplete),
            _ => return Err(HttpError::Chunk),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn with_length(status: u16, body: &[u8]) -> Vec<u8> {
        let mut r = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        r.extend_from_slice(body);
        r
    }

    fn chunked(body: &[u8], cuts: &[usize]) -> Vec<u8> {
        let mut r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        let mut at = 0;
        for &cut in cuts.iter().chain([&body.len()]) {
            let end = cut.clamp(at, body.len());
            if end > at {
                r.extend_from_slice(format!("{:x};ext=1\r\n", end - at).as_bytes());
                r.extend_from_slice(&body[at..end]);
                r.extend_from_slice(b"\r\n");
                at = end;
            }
        }
        r.extend_from_slice(b"0\r\nx-trailer: 1\r\n\r\n");
        r
    }

    #[test]
    fn requests_say_their_length_and_close() {
        let r = String::from_utf8(request("POST", "/v1/jobs", b"{}")).unwrap();
        assert_eq!(
            r,
            "POST /v1/jobs HTTP/1.1\r\nhost: hpcbox\r\ncontent-type: application/json\r\n\
             content-length: 2\r\nconnection: close\r\n\r\n{}"
        );
    }

    #[test]
    fn bodies_are_framed_by_length_chunks_or_the_close() {
        let ok = |status, reason: &str, body: &[u8]| {
            Ok(Response {
                status,
                reason: reason.into(),
                body: body.to_vec(),
            })
        };
        assert_eq!(
            parse_response(&with_length(200, b"[1,2]")),
            ok(200, "X", b"[1,2]")
        );
        assert_eq!(parse_response(&with_length(422, b"")), ok(422, "X", b""));
        assert_eq!(
            parse_response(&chunked(b"hello world", &[3, 4])),
            ok(200, "OK", b"hello world")
        );
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\n\r\nuntil close"),
            ok(200, "OK", b"until close")
        );
        // Bytes after the announced length are not the body's.
        let mut extra = with_length(200, b"ab");
        extra.extend_from_slice(b"junk");
        assert_eq!(parse_response(&extra), ok(200, "X", b"ab"));
    }

    #[test]
    fn short_or_malformed_responses_are_errors() {
        let full = with_length(200, b"abcdef");
        assert_eq!(
            parse_response(&full[..full.len() - 1]),
            Err(HttpError::Incomplete)
        );
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\ncontent-le"),
            Err(HttpError::Incomplete)
        );
        assert_eq!(parse_response(b""), Err(HttpError::Incomplete));
        assert!(matches!(
            parse_response(b"HTTP/9 2xx\r\n\r\n"),
            Err(HttpError::Head(_))
        ));
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: ten\r\n\r\n"),
            Err(HttpError::Length)
        );
        let c = chunked(b"hello", &[]);
        assert_eq!(
            parse_response(&c[..c.len() - 24]),
            Err(HttpError::Incomplete)
        );
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nabX"),
            Err(HttpError::Chunk)
        );
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n"),
            Err(HttpError::Chunk)
        );
    }

    /// A reader that hands out its bytes in pieces, then blocks (fails the test) if read
    /// again while `more` is false.
    struct Pieces {
        bytes: Vec<u8>,
        at: usize,
        piece: usize,
        more: bool,
    }

    impl Read for Pieces {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.piece.min(buf.len()).min(self.bytes.len() - self.at);
            assert!(n > 0 || self.more, "read past a whole response");
            buf[..n].copy_from_slice(&self.bytes[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    #[test]
    fn a_sized_response_is_read_without_waiting_for_the_close() {
        let body: Vec<u8> = (0..40_000u32).map(|i| i as u8).collect();
        for piece in [1, 7, 4096, 1 << 20] {
            let mut stream = Pieces {
                bytes: with_length(200, &body),
                at: 0,
                piece,
                more: false,
            };
            let mut bytes = Vec::new();
            read_response(&mut stream, &mut bytes).unwrap();
            assert_eq!(
                parse_response(&bytes).unwrap().body,
                body,
                "pieces of {piece}"
            );
        }
        // A status without a body ends with its head.
        let mut stream = Pieces {
            bytes: b"HTTP/1.1 204 No Content\r\ncontent-length: 9\r\n\r\n".to_vec(),
            at: 0,
            piece: 4,
            more: false,
        };
        let mut bytes = Vec::new();
        read_response(&mut stream, &mut bytes).unwrap();
        assert_eq!(parse_response(&bytes).unwrap().status, 204);
        // Chunked or close-framed bodies are read to the end of the stream.
        for whole in [
            chunked(b"abc", &[1]),
            b"HTTP/1.1 200 OK\r\n\r\nuntil close".to_vec(),
        ] {
            let mut stream = Pieces {
                bytes: whole,
                at: 0,
                piece: 5,
                more: true,
            };
            let mut bytes = Vec::new();
            read_response(&mut stream, &mut bytes).unwrap();
            assert_eq!(bytes, stream.bytes);
        }
    }

    proptest! {
        #[test]
        fn any_bytes_give_a_response_or_an_error(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_response(&bytes);
            let mut framed = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
            framed.extend_from_slice(&bytes);
            let _ = parse_response(&framed);
        }

        #[test]
        fn chunked_and_sized_bodies_round_trip(
            body in proptest::collection::vec(any::<u8>(), 0..2048),
            cuts in proptest::collection::vec(0usize..2048, 0..8),
            status in 100u16..600,
        ) {
            let mut cuts = cuts;
            cuts.sort_unstable();
            prop_assert_eq!(parse_response(&chunked(&body, &cuts)).map(|r| r.body), Ok(body.clone()));
            // 1xx, 204 and 304 have no body, whatever their content-length says.
            let want = if matches!(status, 100..=199 | 204 | 304) { Vec::new() } else { body.clone() };
            prop_assert_eq!(
                parse_response(&with_length(status, &body)),
                Ok(Response { status, reason: "X".into(), body: want })
            );
        }
    }
}
