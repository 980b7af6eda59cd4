//! Acknowledged membership survives SIGKILL and restart, from the log alone and from a snapshot
//! plus the log after it.

mod common;

use std::time::Duration;

use common::*;

const V: &str = "api-version=2022-06-01";

async fn write_memberships(server: &Server, count: usize) -> anyhow::Result<()> {
    for i in 0..count {
        let r = server
            .rest(
                "PUT",
                &format!("/api/hubs/chat/users/user{i}/groups/group{}?{V}", i % 7),
                None,
            )
            .await?;
        assert_status(&r, 200);
    }
    Ok(())
}

async fn check_memberships(server: &Server, count: usize) -> anyhow::Result<()> {
    for i in 0..count {
        let r = server
            .rest(
                "HEAD",
                &format!("/api/hubs/chat/users/user{i}/groups/group{}?{V}", i % 7),
                None,
            )
            .await?;
        assert_eq!(r.status, 200, "membership {i} lost after restart");
    }
    Ok(())
}

#[tokio::test]
async fn acknowledged_writes_survive_sigkill() -> anyhow::Result<()> {
    let mut server = server().await?;
    let mut js = JsClients::start().await?;
    let id = js
        .connect_simple("a", &server, "chat", Some("user0"))
        .await?;
    write_memberships(&server, 300).await?;
    server.kill().await?;
    server.restart().await?;
    check_memberships(&server, 300).await?;
    // The connection belonged to the killed process: the restarted node does not list it.
    let r = server
        .rest(
            "HEAD",
            &format!("/api/hubs/chat/connections/{id}?{V}"),
            None,
        )
        .await?;
    assert_error(&r, 404, Some("Warning.Connection.NotExisted"));
    Ok(())
}

#[tokio::test]
async fn state_is_rebuilt_from_a_snapshot_and_the_log_after_it() -> anyhow::Result<()> {
    let mut server = server_with(&["--snapshot-every", "40"]).await?;
    write_memberships(&server, 250).await?;
    let snapshots = server.data_dir().join("snapshots");
    eventually(Duration::from_secs(10), "a snapshot on disk", || {
        let dir = snapshots.clone();
        async move { std::fs::read_dir(&dir).ok()?.next().map(|_| ()) }
    })
    .await?;
    server.kill().await?;
    server.restart().await?;
    check_memberships(&server, 250).await?;
    // And it keeps working after the restart: more writes, another kill.
    for i in 250..260 {
        let r = server
            .rest(
                "PUT",
                &format!("/api/hubs/chat/users/user{i}/groups/group{}?{V}", i % 7),
                None,
            )
            .await?;
        assert_status(&r, 200);
    }
    server.kill().await?;
    server.restart().await?;
    check_memberships(&server, 260).await?;
    Ok(())
}
