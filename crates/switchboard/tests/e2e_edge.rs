//! The public listener under abuse, over raw sockets: malformed heads answered with an
//! `ErrorDetail`, slow and silent clients closed within their deadlines (WebSockets exempt), the
//! connection limit answered 429 while health and REST keep working, a connection token that
//! opens one connection only (409 for a second), the accept loop at a low open-file limit, and
//! HTTPS on the public listener.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const V: &str = "api-version=2022-06-01";

/// Writes `request` on a fresh connection and reads until the server closes it (or `within`).
async fn exchange(addr: SocketAddr, request: &[u8], within: Duration) -> anyhow::Result<String> {
    let mut socket = TcpStream::connect(addr).await?;
    socket.write_all(request).await?;
    let mut out = Vec::new();
    tokio::time::timeout(within, socket.read_to_end(&mut out)).await??;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// The status and the JSON body of the first response in `raw`.
fn first_response(raw: &str) -> (u16, serde_json::Value) {
    let status = raw
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {raw:?}"));
    let body = raw.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let json = serde_json::Deserializer::from_str(body)
        .into_iter::<serde_json::Value>()
        .next()
        .and_then(Result::ok)
        .unwrap_or(serde_json::Value::Null);
    (status, json)
}

#[tokio::test]
async fn parser_level_refusals_have_an_error_detail_and_close() -> anyhow::Result<()> {
    let server = server().await?;
    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: h\r\n\r\n", "a".repeat(13 * 1024));
    let many: String = (0..120).map(|i| format!("X-{i}: v\r\n")).collect();
    let many = format!("GET /api/health HTTP/1.1\r\nHost: h\r\n{many}\r\n");
    let big = format!(
        "GET /api/health HTTP/1.1\r\nHost: h\r\nX: {}\r\n\r\n",
        "b".repeat(17 * 1024)
    );
    let cases: Vec<(String, u16, &str)> = vec![
        ("GET /api/health HTTP/1.1\nHost: h\n\n".into(), 400, "Error.Request.Invalid"),
        ("GET /api/health HTTP/1.1\r\nHost: h\nX: y\r\n\r\n".into(), 400, "Error.Request.Invalid"),
        (long_uri, 414, "Error.Request.UriTooLong"),
        (many, 431, "Error.Request.HeadersTooLarge"),
        (big, 431, "Error.Request.HeadersTooLarge"),
        (
            "POST /api/hubs/chat/:send HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".into(),
            400,
            "Error.Request.Invalid",
        ),
        ("GET /api/health HTTP/9.9\r\nHost: h\r\n\r\n".into(), 400, "Error.Request.Invalid"),
        ("GET /api/health HTTP/1.1\r\n\r\n".into(), 400, "Error.Request.Invalid"),
        ("G@T /api/health HTTP/1.1\r\nHost: h\r\n\r\n".into(), 400, "Error.Request.Invalid"),
    ];
    for (request, status, code) in cases {
        let raw = exchange(server.addr, request.as_bytes(), Duration::from_secs(10)).await?;
        let (got, body) = first_response(&raw);
        assert_eq!(
            got,
            status,
            "{:?} -> {raw:?}",
            &request[..request.len().min(60)]
        );
        assert_eq!(body["code"], code, "{raw:?}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{raw:?}"
        );
        assert!(
            raw.to_ascii_lowercase().contains("connection: close"),
            "{raw:?}"
        );
    }
    // A valid request pipelined before a bad one gets its own answer first.
    let pipelined =
        "GET /api/health HTTP/1.1\r\nHost: h\r\n\r\nGET /api/health HTTP/1.1\nHost: h\r\n\r\n";
    let raw = exchange(server.addr, pipelined.as_bytes(), Duration::from_secs(10)).await?;
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw:?}");
    let second = raw.split("HTTP/1.1 ").nth(2).unwrap_or_default();
    assert!(second.starts_with("400"), "{raw:?}");
    let refused = server
        .metric("switchboard_http_requests_refused_total")
        .await;
    assert!(refused.unwrap_or(0.0) >= 10.0, "{refused:?}");
    Ok(())
}

#[tokio::test]
async fn slow_silent_and_idle_clients_are_closed_but_websockets_are_not() -> anyhow::Result<()> {
    let server = server_with(&["--http-header-timeout", "1", "--http-idle-timeout", "2"]).await?;
    // A WebSocket client, idle from the HTTP point of view from the start.
    let mut ws = RawClient::connect_json(&server, "chat", Some("ws-user")).await?;

    // Silent: connected, nothing sent.
    let silent = exchange(server.addr, b"", Duration::from_secs(10)).await?;
    assert_eq!(
        silent, "",
        "a silent connection is closed without an answer"
    );

    // Slowloris: a head that never ends, one byte at a time.
    let mut slow = TcpStream::connect(server.addr).await?;
    slow.write_all(b"GET /api/health HTTP/1.1\r\nHost: h\r\nX-Slow: ")
        .await?;
    let dribble = async {
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if slow.write_all(b"a").await.is_err() {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), dribble).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 408"),
        "slowloris got {answer:?}"
    );
    assert_eq!(first_response(&answer).1["code"], "Error.Request.Timeout");

    // Idle: one request answered, then nothing: the connection is closed by the idle timeout.
    let mut idle = TcpStream::connect(server.addr).await?;
    idle.write_all(b"GET /api/health HTTP/1.1\r\nHost: h\r\n\r\n")
        .await?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), idle.read_to_end(&mut out)).await??;
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 200"), "{out:?}");
    assert!(
        !out.to_ascii_lowercase().contains("connection: close"),
        "closed by idleness, not by the answer: {out:?}"
    );

    // The WebSocket, idle for longer than every HTTP deadline above, still works.
    let id = ws.connection_id.clone();
    send_ok(
        &server,
        &format!("/api/hubs/chat/connections/{id}/:send?{V}"),
        json!(["alive"]),
    )
    .await?;
    let got = ws.recv_text(Duration::from_secs(10)).await?;
    assert!(got.contains("alive"), "{got}");

    // A body that drips in slower than the minimum pace is cut off.
    let token = server.rest_token(&format!("/api/hubs/chat/:send?{V}"));
    let mut drip = TcpStream::connect(server.addr).await?;
    drip.write_all(
        format!("POST /api/hubs/chat/:send?{V} HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{{").as_bytes(),
    )
    .await?;
    let cut = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if drip.write_all(b" ").await.is_err() {
                return;
            }
            let mut byte = [0u8; 256];
            match tokio::time::timeout(Duration::from_millis(1), drip.read(&mut byte)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return,
                Ok(Ok(_)) => return,
                Err(_) => {}
            }
        }
    })
    .await;
    assert!(cut.is_ok(), "a dripping body was never cut off");
    let closed = server
        .metric("switchboard_http_connections_closed_early_total")
        .await
        .unwrap_or(0.0);
    assert!(closed >= 3.0, "{closed}");
    Ok(())
}

#[tokio::test]
async fn the_connection_limit_answers_429_and_health_and_rest_keep_working() -> anyhow::Result<()> {
    let server = server_with(&["--max-connections", "2"]).await?;
    let spare = RawClient::negotiate(&server, "chat", None).await?;
    let mut first = RawClient::connect_json(&server, "chat", Some("a")).await?;
    let _second = RawClient::connect_json(&server, "chat", Some("b")).await?;
    // Full: negotiate and connect are refused with Azure's answer.
    let negotiate = reqwest::Client::new()
        .post(server.url("/client/negotiate?hub=chat&negotiateVersion=1"))
        .bearer_auth(server.client_token("chat", None))
        .send()
        .await?;
    assert_eq!(negotiate.status(), 429);
    let body: serde_json::Value = negotiate.json().await?;
    assert_eq!(body["code"], "Error.Connection.LimitReached");
    assert_eq!(body["message"], "Connection count reaches limit.");
    let refused = RawClient::connect_ticket(&server, "chat", &spare).await?;
    let refused = refused.err().map(|r| r.status);
    assert_eq!(refused, Some(429));
    // The rest of the server works.
    expect_status(&server, "GET", "/api/health", 200).await?;
    send_ok(
        &server,
        &format!("/api/hubs/chat/:send?{V}"),
        json!(["full"]),
    )
    .await?;
    assert!(first
        .recv_text(Duration::from_secs(10))
        .await?
        .contains("full"));
    // A connection leaves: there is room again.
    drop(first);
    eventually(Duration::from_secs(10), "room for a connection", || async {
        RawClient::connect_json(&server, "chat", Some("c"))
            .await
            .ok()
    })
    .await?;
    let refusals = server.metric("switchboard_connections_refused_total").await;
    assert!(refusals.unwrap_or(0.0) >= 2.0, "{refusals:?}");
    Ok(())
}

#[tokio::test]
async fn a_connection_token_opens_one_connection() -> anyhow::Result<()> {
    let server = server_with(&["--connection-token-lifetime", "1"]).await?;
    let negotiated = RawClient::negotiate(&server, "chat", Some("alice")).await?;
    let mut first = match RawClient::connect_ticket(&server, "chat", &negotiated).await? {
        Ok(client) => client,
        Err(refused) => anyhow::bail!("first connect refused: {refused:?}"),
    };
    first.handshake_json().await?;
    // The same token again, while the first connection is open.
    let again = RawClient::connect_ticket(&server, "chat", &negotiated).await?;
    let refused = again.err().expect("a second transport is refused");
    assert_eq!(refused.status, 409, "{refused:?}");
    let detail: serde_json::Value = serde_json::from_str(&refused.body)?;
    assert_eq!(detail["code"], "Error.Connection.InUse");
    // The first one is untouched.
    let id = &negotiated.connection_id;
    expect_status(
        &server,
        "HEAD",
        &format!("/api/hubs/chat/connections/{id}?{V}"),
        200,
    )
    .await?;
    send_ok(
        &server,
        &format!("/api/hubs/chat/connections/{id}/:send?{V}"),
        json!(["mine"]),
    )
    .await?;
    assert!(first
        .recv_text(Duration::from_secs(10))
        .await?
        .contains("mine"));
    // A token is good only for a short while (1 s here, plus the clock-skew leeway).
    let late = RawClient::negotiate(&server, "chat", None).await?;
    eventually(Duration::from_secs(15), "the token expires", || async {
        match RawClient::connect_ticket(&server, "chat", &late)
            .await
            .ok()?
        {
            Err(refused) if refused.status == 404 => Some(()),
            _ => None,
        }
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_connection_token_is_refused_on_another_gateway_while_its_connection_is_open(
) -> anyhow::Result<()> {
    let cluster = Cluster::serve(bin(), 2, &[]).await?;
    let (a, b) = (&cluster.voters[0], &cluster.voters[1]);
    let negotiated = RawClient::negotiate(a, "chat", None).await?;
    let mut first = match RawClient::connect_ticket(a, "chat", &negotiated).await? {
        Ok(client) => client,
        Err(refused) => anyhow::bail!("first connect refused: {refused:?}"),
    };
    first.handshake_json().await?;
    // The issuer remembers the token's use: refused at once, on any gateway.
    match RawClient::connect_ticket(b, "chat", &negotiated).await? {
        Err(refused) => assert_eq!(refused.status, 409, "{refused:?}"),
        Ok(_) => anyhow::bail!("a used token opened a second connection on another gateway"),
    }
    // A token first used on a gateway that did not issue it is refused by its issuer too.
    let other = RawClient::negotiate(a, "chat", None).await?;
    let mut elsewhere = match RawClient::connect_ticket(b, "chat", &other).await? {
        Ok(client) => client,
        Err(refused) => anyhow::bail!("connect on another gateway refused: {refused:?}"),
    };
    elsewhere.handshake_json().await?;
    let refused = match RawClient::connect_ticket(a, "chat", &other).await? {
        Err(refused) => refused,
        Ok(_) => anyhow::bail!("the issuer let a used token open a second connection"),
    };
    assert_eq!(refused.status, 409);
    let id = &negotiated.connection_id;
    send_ok(
        b,
        &format!("/api/hubs/chat/connections/{id}/:send?{V}"),
        json!(["still mine"]),
    )
    .await?;
    assert!(first
        .recv_text(Duration::from_secs(10))
        .await?
        .contains("still mine"));
    Ok(())
}

#[tokio::test]
async fn health_negotiate_and_rest_keep_working_with_the_file_limit_full_of_silent_sockets(
) -> anyhow::Result<()> {
    // 512 open files: room for about 330 sockets; 700 silent ones are opened.
    let server = Server::start(
        bin(),
        ServerOptions {
            nofile: Some(512),
            ..Default::default()
        },
    )
    .await?;
    let mut silent = Vec::new();
    for _ in 0..700 {
        silent.push(TcpStream::connect(server.addr).await?);
    }
    for _ in 0..3 {
        expect_status(&server, "GET", "/api/health", 200).await?;
        RawClient::negotiate(&server, "chat", None).await?;
        send_ok(&server, &format!("/api/hubs/chat/:send?{V}"), json!(["ok"])).await?;
    }
    let evicted = server
        .metric("switchboard_http_connections_closed_early_total")
        .await
        .unwrap_or(0.0);
    assert!(evicted >= 300.0, "silent sockets evicted: {evicted}");
    drop(silent);
    Ok(())
}

/// GET /api/health over TLS, trusting `ca`; the raw answer.
async fn https_health(addr: SocketAddr, ca: &pki::Ca) -> anyhow::Result<String> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(&ca.pem)? {
        roots.add(cert?)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await?;
    let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(rustls_pki_types::ServerName::try_from("localhost")?, tcp)
        .await?;
    tls.write_all(b"GET /api/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut out)).await??;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// A server with HTTPS on its listener (certificate for localhost from a fresh CA), and the CA;
/// returns once it answers over HTTPS, with that answer.
async fn https_server(
    dir: &std::path::Path,
    nofile: Option<u64>,
) -> anyhow::Result<(Server, pki::Ca, String)> {
    let ca = pki::Ca::new(dir, "public")?;
    let leaf = ca.leaf(dir, "localhost")?;
    let server = Server::launch(
        bin(),
        ServerOptions {
            args: vec![
                "--tls-cert".into(),
                leaf.cert.to_string_lossy().into_owned(),
                "--tls-key".into(),
                leaf.key.to_string_lossy().into_owned(),
            ],
            nofile,
            ..Default::default()
        },
    )
    .await?;
    let answer = eventually(Duration::from_secs(20), "health over https", || async {
        https_health(server.addr, &ca).await.ok()
    })
    .await?;
    Ok((server, ca, answer))
}

#[tokio::test]
async fn the_public_listener_speaks_https() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // HTTPS with the CA: served.
    let (server, _ca, answer) = https_server(dir.path(), None).await?;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    assert!(server.logs().await.contains("Endpoint=https://"));
    // Plain HTTP on the TLS port gets no answer.
    let plain = exchange(
        server.addr,
        b"GET /api/health HTTP/1.1\r\nHost: h\r\n\r\n",
        Duration::from_secs(15),
    )
    .await
    .unwrap_or_default();
    assert!(!plain.starts_with("HTTP/1.1 200"), "{plain:?}");
    Ok(())
}

#[tokio::test]
async fn silent_sockets_cannot_fill_an_https_listener() -> anyhow::Result<()> {
    // Handshakes that never start are evicted like silent HTTP sockets.
    let dir = tempfile::tempdir()?;
    let (server, ca, _) = https_server(dir.path(), Some(512)).await?;
    let mut silent = Vec::new();
    for _ in 0..700 {
        silent.push(TcpStream::connect(server.addr).await?);
    }
    for _ in 0..3 {
        let answer = https_health(server.addr, &ca).await?;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    }
    drop(silent);
    Ok(())
}
