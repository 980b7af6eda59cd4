//! /metrics after real traffic is valid Prometheus exposition (checked by promtool) and carries
//! the metrics dashboards and alerts rely on.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::*;
use serde_json::json;

#[tokio::test]
async fn metrics_after_real_traffic_pass_promtool() -> anyhow::Result<()> {
    let server = server().await?;
    let mut js = JsClients::start().await?;
    js.connect_simple("a", &server, "chat", Some("u")).await?;
    js.connect(
        "b",
        &server,
        ConnectOptions {
            protocol: "messagepack",
            ..Default::default()
        },
    )
    .await?;
    send_ok(&server, "/api/v1/hubs/chat", json!(["m"])).await?;
    expect_status(
        &server,
        "PUT",
        "/api/hubs/chat/users/u/groups/g?api-version=2022-06-01",
        200,
    )
    .await?;
    js.next_message("a").await?;
    js.next_message("b").await?;
    assert_eq!(
        server
            .rest_with("POST", "/api/v1/hubs/chat", None, None)
            .await?
            .status,
        401
    );
    js.stop("b").await?;

    let scrape = server.rest_with("GET", "/metrics", None, None).await?;
    assert_status(&scrape, 200);
    for name in [
        "switchboard_connections ",
        "switchboard_connections_opened_total",
        "switchboard_connections_closed_total{reason=\"client\"}",
        "switchboard_messages_sent_total",
        "switchboard_sent_bytes_total",
        "switchboard_fanout_duration_seconds_bucket",
        "switchboard_http_requests_total{route=\"/api/v1/hubs/{hub}\",method=\"POST\",status=\"401\"}",
        "switchboard_http_request_duration_seconds_bucket",
        "switchboard_raft_term",
        "switchboard_raft_is_leader 1",
        "switchboard_raft_commit_index",
        "switchboard_store_write_batch_size_bucket",
    ] {
        assert!(scrape.body.contains(name), "{name} missing from /metrics:\n{}", scrape.body);
    }

    let promtool = which("promtool").ok_or_else(|| {
        anyhow::anyhow!("promtool is not installed (Debian package `prometheus`; ./test.sh installs it when it can)")
    })?;
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(scrape.body.as_bytes())?;
    let out = child.wait_with_output()?;
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // promtool exits 3 for lint warnings (naming advice) and 1 for errors; neither is accepted.
    assert!(
        out.status.success(),
        "promtool check metrics failed ({:?}):\n{report}",
        out.status.code()
    );
    Ok(())
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| std::path::Path::new(dir).join(program))
        .find(|p| p.is_file())
}
