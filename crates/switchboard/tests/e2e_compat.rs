//! What clients other than the current official ones rely on: negotiate version 0 (no
//! `negotiateVersion`: the connection id is the `id`), every hub protocol version up to 2 in the
//! handshake, and CORS for browser pages on other origins.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

/// Negotiates without `negotiateVersion`; returns the body.
async fn negotiate_v0(
    server: &Server,
    hub: &str,
    token: &str,
) -> anyhow::Result<serde_json::Value> {
    let resp = reqwest::Client::new()
        .post(server.url(&format!("/client/negotiate?hub={hub}")))
        .bearer_auth(token)
        .send()
        .await?;
    anyhow::ensure!(resp.status() == 200, "negotiate answered {}", resp.status());
    Ok(resp.json().await?)
}

/// Opens a WebSocket with `query`; the upgrade's status (101 when accepted) and the socket.
async fn connect(server: &Server, query: &str) -> anyhow::Result<(u16, Option<RawClient>)> {
    let url = format!("ws://{}/client/?{query}", server.addr);
    match tokio_tungstenite::connect_async(url).await {
        Ok((ws, _)) => Ok((
            101,
            Some(RawClient {
                connection_id: String::new(),
                ws,
            }),
        )),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            Ok((resp.status().as_u16(), None))
        }
        Err(e) => Err(e.into()),
    }
}

#[tokio::test]
async fn version_0_clients_connect_with_the_connection_id() -> anyhow::Result<()> {
    let server = server().await?;
    let bob = server.client_token("chat", Some("bob"));
    let body = negotiate_v0(&server, "chat", &bob).await?;
    assert_eq!(body["negotiateVersion"], 0, "{body}");
    assert!(
        body.get("connectionToken").is_none(),
        "no token in version 0: {body}"
    );
    assert_eq!(body["availableTransports"][0]["transport"], "WebSockets");
    let id = body["connectionId"].as_str().unwrap_or_default().to_owned();
    assert!(!id.is_empty());
    let escaped: String = form_urlencoded::byte_serialize(id.as_bytes()).collect();

    // Refused: no access token (version 0 proves the user with it), another user's token, a
    // token for another hub, a tampered id, the id on another hub.
    assert_eq!(
        connect(&server, &format!("hub=chat&id={escaped}")).await?.0,
        401
    );
    let eve = server.client_token("chat", Some("eve"));
    assert_eq!(
        connect(
            &server,
            &format!("hub=chat&id={escaped}&access_token={eve}")
        )
        .await?
        .0,
        404,
        "another user's token"
    );
    let mut tampered = id.clone().into_bytes();
    tampered[3] = if tampered[3] == b'A' { b'B' } else { b'A' };
    let tampered: String = form_urlencoded::byte_serialize(&tampered).collect();
    assert_eq!(
        connect(
            &server,
            &format!("hub=chat&id={tampered}&access_token={bob}")
        )
        .await?
        .0,
        404,
        "forged id"
    );
    let news = server.client_token("news", Some("bob"));
    assert_eq!(
        connect(
            &server,
            &format!("hub=news&id={escaped}&access_token={news}")
        )
        .await?
        .0,
        404,
        "id issued for another hub"
    );

    // Accepted with the user's token; the connection is addressable by that id and user.
    let (status, client) = connect(
        &server,
        &format!("hub=chat&id={escaped}&access_token={bob}"),
    )
    .await?;
    assert_eq!(status, 101);
    let mut client = client.ok_or_else(|| anyhow::anyhow!("no socket"))?;
    client.handshake_json().await?;
    // A reused id is refused while the connection is open.
    assert_eq!(
        connect(
            &server,
            &format!("hub=chat&id={escaped}&access_token={bob}")
        )
        .await?
        .0,
        409
    );
    let resp = server
        .rest(
            "POST",
            &format!("/api/hubs/chat/connections/{escaped}/:send?api-version=2022-06-01"),
            Some(body_json("toConnection")),
        )
        .await?;
    assert_status(&resp, 202);
    let got = client.recv_text(Duration::from_secs(10)).await?;
    assert!(got.contains("toConnection"), "{got}");
    let resp = server
        .rest(
            "POST",
            "/api/hubs/chat/users/bob/:send?api-version=2022-06-01",
            Some(body_json("toUser")),
        )
        .await?;
    assert_status(&resp, 202);
    let got = client.recv_text(Duration::from_secs(10)).await?;
    assert!(got.contains("toUser"), "{got}");
    let v0 = server
        .metric("switchboard_negotiations_total{version=\"0\"}")
        .await;
    assert_eq!(v0, Some(1.0));
    Ok(())
}

fn body_json(target: &str) -> serde_json::Value {
    json!({ "target": target, "arguments": [1] })
}

#[tokio::test]
async fn an_expired_version_0_id_is_refused() -> anyhow::Result<()> {
    let server = server_with(&["--connection-token-lifetime", "1"]).await?;
    let bob = server.client_token("chat", Some("bob"));
    let id = negotiate_v0(&server, "chat", &bob).await?["connectionId"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let escaped: String = form_urlencoded::byte_serialize(id.as_bytes()).collect();
    // Lifetime 1 s plus the 5 s leeway between gateways' clocks: wait until it must be refused.
    let query = format!("hub=chat&id={escaped}&access_token={bob}");
    // (Attempts before that may be accepted, or refused as in use while an earlier one is open.)
    let status = eventually(Duration::from_secs(15), "the id expires", || async {
        match connect(&server, &query).await {
            Ok((404, _)) => Some(404),
            _ => None,
        }
    })
    .await?;
    assert_eq!(status, 404);
    Ok(())
}

#[tokio::test]
async fn handshake_versions_0_to_2_are_accepted_and_3_is_refused() -> anyhow::Result<()> {
    let server = server().await?;
    for version in [0, 1, 2] {
        let mut client = RawClient::open(&server, "chat", None).await?;
        client
            .send_text(&format!(
                "{{\"protocol\":\"json\",\"version\":{version}}}\u{1e}"
            ))
            .await?;
        assert_eq!(
            client.recv_text(Duration::from_secs(10)).await?,
            "{}\u{1e}",
            "version {version}"
        );
    }
    let mut client = RawClient::open(&server, "chat", None).await?;
    client
        .send_text("{\"protocol\":\"json\",\"version\":3}\u{1e}")
        .await?;
    let reply = client.recv_text(Duration::from_secs(10)).await?;
    assert!(reply.contains("does not support version 3"), "{reply}");
    Ok(())
}

/// A CORS preflight for negotiate from `origin`: the response's allow-origin and
/// allow-credentials headers.
async fn preflight(
    server: &Server,
    origin: &str,
) -> anyhow::Result<(Option<String>, Option<String>)> {
    let resp = reqwest::Client::new()
        .request(
            reqwest::Method::OPTIONS,
            server.url("/client/negotiate?hub=chat&negotiateVersion=1"),
        )
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,x-requested-with",
        )
        .send()
        .await?;
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    Ok((
        header("access-control-allow-origin"),
        header("access-control-allow-credentials"),
    ))
}

#[tokio::test]
async fn cors_lets_in_every_origin_by_default_and_only_listed_ones_when_configured(
) -> anyhow::Result<()> {
    let open = server().await?;
    assert_eq!(
        preflight(&open, "https://anywhere.example").await?,
        (Some("https://anywhere.example".into()), Some("true".into()))
    );

    let listed = server_with(&[
        "--cors-allowed-origins",
        "https://app.example:8443,http://localhost:3000",
    ])
    .await?;
    assert_eq!(
        preflight(&listed, "https://app.example:8443").await?,
        (Some("https://app.example:8443".into()), Some("true".into()))
    );
    assert_eq!(
        preflight(&listed, "http://localhost:3000").await?,
        (Some("http://localhost:3000".into()), Some("true".into()))
    );
    assert_eq!(
        preflight(&listed, "https://evil.example").await?,
        (None, None)
    );
    assert_eq!(
        preflight(&listed, "https://app.example").await?,
        (None, None),
        "port differs"
    );

    // A simple (non-preflighted) request from an unlisted origin is served, without CORS
    // headers: the browser, not the server, withholds the answer from the page.
    let resp = reqwest::Client::new()
        .get(listed.url("/api/health"))
        .header("origin", "https://evil.example")
        .send()
        .await?;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("access-control-allow-origin").is_none());
    Ok(())
}

#[tokio::test]
async fn a_bad_cors_origin_is_refused_at_start() -> anyhow::Result<()> {
    for bad in ["app.example", "https://app.example/path", ""] {
        let dir = tempfile::tempdir()?;
        let out = tokio::process::Command::new(bin())
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--cors-allowed-origins",
                bad,
            ])
            .arg("--data-dir")
            .arg(dir.path())
            .output()
            .await?;
        assert_eq!(
            out.status.code(),
            Some(64),
            "{bad:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("cors-allowed-origins"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// An empty key must not fall back to a generated one: each node of a cluster would then sign
/// with its own key and refuse the others' tokens.
#[tokio::test]
async fn an_empty_or_blank_access_key_is_refused_at_start() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().to_str().unwrap_or(".").to_owned();
    for (role, extra) in [
        ("serve", vec!["--data-dir", &data]),
        (
            "gateway",
            vec!["--store", "127.0.0.1:1", "--cluster-listen", "127.0.0.1:0"],
        ),
        (
            "store",
            vec![
                "--data-dir",
                &data,
                "--cluster-listen",
                "127.0.0.1:0",
                "--node-id",
                "1",
                "--peers",
                "1=127.0.0.1:1",
            ],
        ),
    ] {
        for blank in ["", "  ", "\t"] {
            let out = tokio::process::Command::new(bin())
                .args([role, "--access-key", blank])
                .args(&extra)
                .output()
                .await?;
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(64), "{role} {blank:?}: {stderr}");
            assert!(stderr.contains("--access-key is empty"), "{stderr}");
        }
        let out = tokio::process::Command::new(bin())
            .args([role])
            .args(&extra)
            .env("SWITCHBOARD_ACCESS_KEY", " ")
            .output()
            .await?;
        assert_eq!(
            out.status.code(),
            Some(64),
            "{role} env: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}
