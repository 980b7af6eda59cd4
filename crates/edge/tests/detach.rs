//! Detached requests through the whole edge, over real sockets: the HTTP server and the edge
//! take turns on one keep-alive connection, in request order, and a client that leaves drops
//! the answer it was waiting for.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use switchboard_edge::EdgeConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Mutex, Notify};
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
struct App {
    /// Where each stream answer takes its frames from.
    streams: Arc<Mutex<mpsc::Receiver<mpsc::Receiver<Bytes>>>>,
    release: Arc<Notify>,
}

async fn stream(State(app): State<App>) -> axum::response::Response {
    let Some(frames) = app.streams.lock().await.recv().await else {
        return axum::response::Response::new(Body::empty());
    };
    let body = futures::stream::unfold(frames, |mut frames| async move {
        let frame = frames.recv().await?;
        Some((Ok::<_, std::convert::Infallible>(frame), frames))
    });
    axum::response::Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(body))
        .unwrap_or_default()
}

async fn start() -> (
    String,
    mpsc::Sender<mpsc::Receiver<Bytes>>,
    Arc<Notify>,
    CancellationToken,
) {
    let (streams_tx, streams_rx) = mpsc::channel(8);
    let release = Arc::new(Notify::new());
    let app = App {
        streams: Arc::new(Mutex::new(streams_rx)),
        release: release.clone(),
    };
    let router = Router::new()
        .route(
            "/client",
            get(stream).post(|body: String| async move { format!("echo {body}") }),
        )
        .route(
            "/slow",
            post(|State(app): State<App>| async move {
                app.release.notified().await;
                "slow done"
            }),
        )
        .route("/other", get(|| async { "other" }))
        .with_state(app);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let mut config = EdgeConfig::new(
        64,
        Arc::new(|error| axum::response::Response::new(Body::from(error.to_string()))),
    );
    config.detach_paths = Arc::from(vec!["/client".to_owned()]);
    let shutdown = CancellationToken::new();
    tokio::spawn(switchboard_edge::serve(
        listener,
        router,
        config,
        shutdown.clone(),
        Duration::from_secs(1),
    ));
    (addr, streams_tx, release, shutdown)
}

/// A response as read off the wire.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads from `tcp` into `buf` until `done` says how much of it is wanted.
async fn read_until(
    tcp: &mut TcpStream,
    buf: &mut Vec<u8>,
    mut done: impl FnMut(&[u8]) -> Option<usize>,
) -> Vec<u8> {
    loop {
        if let Some(n) = done(buf) {
            return buf.drain(..n).collect();
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut chunk))
            .await
            .expect("the answer comes")
            .unwrap();
        assert!(
            n > 0,
            "the connection closed early: {:?}",
            String::from_utf8_lossy(buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Reads one response head, then its body as one piece (length) or chunk by chunk (`chunks`
/// called with each, to let the test act between them).
async fn answer(tcp: &mut TcpStream, buf: &mut Vec<u8>, mut chunks: impl FnMut(&[u8])) -> Answer {
    let head = read_until(tcp, buf, |b| {
        b.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
    })
    .await;
    let mut fields = [httparse::EMPTY_HEADER; 32];
    let mut parsed = httparse::Response::new(&mut fields);
    assert!(parsed.parse(&head).unwrap().is_complete());
    let status = parsed.code.unwrap();
    let headers: Vec<(String, String)> = parsed
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_owned(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let mut answer = Answer {
        status,
        headers,
        body: Vec::new(),
    };
    if let Some(length) = answer.header("content-length") {
        let length: usize = length.parse().unwrap();
        answer.body = read_until(tcp, buf, |b| (b.len() >= length).then_some(length)).await;
    } else if answer.header("transfer-encoding") == Some("chunked") {
        loop {
            let line = read_until(tcp, buf, |b| {
                b.windows(2).position(|w| w == b"\r\n").map(|i| i + 2)
            })
            .await;
            let size =
                usize::from_str_radix(std::str::from_utf8(&line[..line.len() - 2]).unwrap(), 16)
                    .unwrap();
            let data = read_until(tcp, buf, |b| (b.len() >= size + 2).then_some(size + 2)).await;
            if size == 0 {
                break;
            }
            chunks(&data[..size]);
            answer.body.extend_from_slice(&data[..size]);
        }
    } else if answer.header("connection") == Some("close") {
        // Delimited by the end of the connection.
        tcp.read_to_end(buf).await.unwrap();
        answer.body = std::mem::take(buf);
    }
    answer
}

async fn closed(tcp: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut byte)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test]
async fn the_server_and_the_edge_take_turns_on_one_connection() {
    let (addr, streams, _, _shutdown) = start().await;
    let mut tcp = TcpStream::connect(&addr).await.unwrap();
    let mut buf = Vec::new();

    // A request for the HTTP server first ...
    tcp.write_all(b"POST /client HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi")
        .await
        .unwrap();
    let echo = answer(&mut tcp, &mut buf, |_| {}).await;
    assert_eq!(
        (echo.status, echo.body.as_slice()),
        (200, b"echo hi".as_slice())
    );

    // ... then a detached stream: frames arrive one by one as they are produced ...
    let (frames_tx, frames_rx) = mpsc::channel(4);
    streams.send(frames_rx).await.unwrap();
    tcp.write_all(b"GET /client?id=1 HTTP/1.1\r\nHost: h\r\nAccept: text/event-stream\r\n\r\n")
        .await
        .unwrap();
    frames_tx
        .send(Bytes::from_static(b"data: one\r\n\r\n"))
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut frames_tx = Some(frames_tx);
    let stream = answer(&mut tcp, &mut buf, |chunk| {
        seen.push(chunk.to_vec());
        // The next frame only once the first arrived; then the stream ends.
        if let Some(tx) = frames_tx.take() {
            tx.try_send(Bytes::from_static(b"data: two\r\n\r\n"))
                .unwrap();
        }
    })
    .await;
    assert_eq!(stream.status, 200);
    assert_eq!(stream.header("content-type"), Some("text/event-stream"));
    assert!(stream.header("date").is_some());
    assert_eq!(
        seen,
        vec![b"data: one\r\n\r\n".to_vec(), b"data: two\r\n\r\n".to_vec()]
    );

    // ... and the connection is the HTTP server's again, for a detached request pipelined
    // behind another and one for the server behind that: answered in order.
    tcp.write_all(b"GET /other HTTP/1.1\r\nHost: h\r\n\r\nGET /client HTTP/1.1\r\nHost: h\r\n\r\nGET /other HTTP/1.1\r\nHost: h\r\n\r\n")
        .await
        .unwrap();
    let (frames_tx, frames_rx) = mpsc::channel(4);
    streams.send(frames_rx).await.unwrap();
    drop(frames_tx);
    let first = answer(&mut tcp, &mut buf, |_| {}).await;
    let second = answer(&mut tcp, &mut buf, |_| {}).await;
    let third = answer(&mut tcp, &mut buf, |_| {}).await;
    assert_eq!(first.body, b"other");
    assert_eq!((second.status, second.body.len()), (200, 0));
    assert_eq!(third.body, b"other");
}

#[tokio::test]
async fn a_detached_request_waits_for_the_answers_before_it() {
    let (addr, streams, release, _shutdown) = start().await;
    let mut tcp = TcpStream::connect(&addr).await.unwrap();
    let mut buf = Vec::new();
    let (frames_tx, frames_rx) = mpsc::channel(4);
    streams.send(frames_rx).await.unwrap();
    tcp.write_all(b"POST /slow HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\nGET /client HTTP/1.1\r\nHost: h\r\n\r\n")
        .await
        .unwrap();
    // The stream is ready before the slow answer, and still comes second.
    frames_tx
        .send(Bytes::from_static(b"data: x\r\n\r\n"))
        .await
        .unwrap();
    drop(frames_tx);
    release.notify_one();
    let slow = answer(&mut tcp, &mut buf, |_| {}).await;
    assert_eq!(slow.body, b"slow done");
    let stream = answer(&mut tcp, &mut buf, |_| {}).await;
    assert_eq!(stream.body, b"data: x\r\n\r\n");
}

#[tokio::test]
async fn a_client_that_leaves_drops_its_answer() {
    let (addr, streams, _, _shutdown) = start().await;
    let mut tcp = TcpStream::connect(&addr).await.unwrap();
    let mut buf = Vec::new();
    let (frames_tx, frames_rx) = mpsc::channel(4);
    streams.send(frames_rx).await.unwrap();
    tcp.write_all(b"GET /client HTTP/1.1\r\nHost: h\r\n\r\n")
        .await
        .unwrap();
    // The stream works ...
    frames_tx
        .send(Bytes::from_static(b"data: 1\r\n\r\n"))
        .await
        .unwrap();
    let head = read_until(&mut tcp, &mut buf, |b| {
        b.windows(11)
            .position(|w| w == b"data: 1\r\n\r\n")
            .map(|i| i + 11)
    })
    .await;
    assert!(head.starts_with(b"HTTP/1.1 200 OK\r\n"));
    // ... and once the client is gone, nobody reads the frames any more.
    drop(tcp);
    tokio::time::timeout(Duration::from_secs(10), frames_tx.closed())
        .await
        .expect("the answer is dropped");
}

#[tokio::test]
async fn a_client_that_pipelines_too_much_behind_a_stream_is_let_go() {
    let (addr, streams, _, _shutdown) = start().await;
    let mut tcp = TcpStream::connect(&addr).await.unwrap();
    let mut buf = Vec::new();
    let (frames_tx, frames_rx) = mpsc::channel(4);
    streams.send(frames_rx).await.unwrap();
    tcp.write_all(b"GET /client HTTP/1.1\r\nHost: h\r\n\r\n")
        .await
        .unwrap();
    // The stream works ...
    frames_tx
        .send(Bytes::from_static(b"data: 1\r\n\r\n"))
        .await
        .unwrap();
    read_until(&mut tcp, &mut buf, |b| {
        b.windows(11)
            .position(|w| w == b"data: 1\r\n\r\n")
            .map(|i| i + 11)
    })
    .await;
    // ... and a client that sends more than 64 KiB behind it while it runs is dropped with it.
    tcp.write_all(&vec![b'x'; 70 * 1024]).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), frames_tx.closed())
        .await
        .expect("the answer is dropped");
    assert!(closed(&mut tcp).await);
}

#[tokio::test]
async fn connection_close_is_honoured_after_a_detached_answer() {
    let (addr, streams, _, _shutdown) = start().await;
    for request in [
        &b"GET /client HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"[..],
        &b"GET /client HTTP/1.0\r\n\r\n"[..],
    ] {
        let mut tcp = TcpStream::connect(&addr).await.unwrap();
        let mut buf = Vec::new();
        let (frames_tx, frames_rx) = mpsc::channel(4);
        streams.send(frames_rx).await.unwrap();
        tcp.write_all(request).await.unwrap();
        frames_tx
            .send(Bytes::from_static(b"data: 1\r\n\r\n"))
            .await
            .unwrap();
        drop(frames_tx);
        let stream = answer(&mut tcp, &mut buf, |_| {}).await;
        assert_eq!(stream.header("connection"), Some("close"));
        assert_eq!(stream.body, b"data: 1\r\n\r\n");
        assert!(closed(&mut tcp).await);
    }
}
