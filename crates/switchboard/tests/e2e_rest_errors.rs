//! Every REST error is the documented status with an ErrorDetail body; 404s carry the
//! x-ms-error-code the server SDK needs; tokens are checked strictly enough.

mod common;

use common::*;
use serde_json::json;
use switchboard_auth::{mint_client_token, mint_rest_token, Claims};

const SEND: &str = "/api/hubs/chat/:send?api-version=2022-06-01";

#[tokio::test]
async fn tokens_are_required_signed_unexpired_and_for_this_path() -> anyhow::Result<()> {
    let server = server().await?;
    let msg = Some(("application/json", br#"{"target":"m"}"#.to_vec()));
    let now = now_secs();
    let host = format!("http://{}", server.addr.ip());

    let r = server.rest_with("POST", SEND, None, msg.clone()).await?;
    assert_error(&r, 401, None);
    let wrong_key = mint_rest_token("not-the-key", &format!("{host}{SEND}"), None, now, 60);
    assert_error(
        &server
            .rest_with("POST", SEND, Some(&wrong_key), msg.clone())
            .await?,
        401,
        None,
    );
    let expired = mint_rest_token(
        &server.keys[0],
        &format!("{host}{SEND}"),
        None,
        now - 3600,
        60,
    );
    assert_error(
        &server
            .rest_with("POST", SEND, Some(&expired), msg.clone())
            .await?,
        401,
        None,
    );
    let other_path = mint_rest_token(
        &server.keys[0],
        &format!("{host}/api/hubs/other/:send"),
        None,
        now,
        60,
    );
    assert_error(
        &server
            .rest_with("POST", SEND, Some(&other_path), msg.clone())
            .await?,
        401,
        None,
    );
    // A client token can never call the REST API.
    let client = mint_client_token(
        &server.keys[0],
        &host,
        "chat",
        None,
        &Claims::new(),
        now,
        60,
    );
    assert_error(
        &server
            .rest_with("POST", SEND, Some(&client), msg.clone())
            .await?,
        401,
        None,
    );
    assert_error(
        &server
            .rest_with("POST", SEND, Some("garbage"), msg.clone())
            .await?,
        401,
        None,
    );
    // The docs' audience form (no query, no port) and the SDK's (with api-version) both work.
    let docs_form = mint_rest_token(
        &server.keys[0],
        &format!("{host}/api/hubs/chat/:send"),
        None,
        now,
        60,
    );
    assert_status(
        &server
            .rest_with("POST", SEND, Some(&docs_form), msg.clone())
            .await?,
        202,
    );
    assert_status(
        &server
            .rest("POST", SEND, Some(json!({"target": "m"})))
            .await?,
        202,
    );
    Ok(())
}

#[tokio::test]
async fn a_token_names_one_application_and_one_resource() -> anyhow::Result<()> {
    let server = server().await?;
    let msg = Some(("application/json", br#"{"target":"m"}"#.to_vec()));
    let host = format!("http://{}", server.addr.ip());
    let token = |path: &str| {
        mint_rest_token(
            &server.keys[0],
            &format!("{host}{path}"),
            None,
            now_secs(),
            60,
        )
    };
    // The .NET SDK's form: the application in the audience's query.
    let app1 = "/api/hubs/chat/:send?application=app1&api-version=2022-06-01";
    let app2 = "/api/hubs/chat/:send?application=app2&api-version=2022-06-01";
    let app1_token = token(app1);
    assert_status(
        &server
            .rest_with("POST", app1, Some(&app1_token), msg.clone())
            .await?,
        202,
    );
    assert_error(
        &server
            .rest_with("POST", app2, Some(&app1_token), msg.clone())
            .await?,
        401,
        None,
    );
    assert_error(
        &server
            .rest_with("POST", SEND, Some(&app1_token), msg.clone())
            .await?,
        401,
        None,
    );
    // A token without an application does not open an application's hub.
    assert_error(
        &server
            .rest_with("POST", app1, Some(&token(SEND)), msg.clone())
            .await?,
        401,
        None,
    );

    // A token for user u in group g does not open send-to-user "u/groups/g" (%2F), nor back.
    let in_group = "/api/hubs/chat/users/u/groups/g?api-version=2022-06-01";
    let odd_user = "/api/hubs/chat/users/u%2Fgroups%2Fg/:send?api-version=2022-06-01";
    let group_token = token("/api/hubs/chat/users/u/groups/g/:send?api-version=2022-06-01");
    assert_error(
        &server
            .rest_with("POST", odd_user, Some(&group_token), msg.clone())
            .await?,
        401,
        None,
    );
    assert_status(
        &server
            .rest_with("POST", odd_user, Some(&token(odd_user)), msg.clone())
            .await?,
        202,
    );
    let odd_token = token("/api/hubs/chat/users/u%2Fgroups/g?api-version=2022-06-01");
    assert_error(
        &server
            .rest_with("PUT", in_group, Some(&odd_token), None)
            .await?,
        401,
        None,
    );
    assert_status(
        &server
            .rest_with("PUT", in_group, Some(&token(in_group)), None)
            .await?,
        200,
    );
    Ok(())
}

#[tokio::test]
async fn arguments_a_client_protocol_cannot_carry_are_400() -> anyhow::Result<()> {
    let server = server().await?;
    let deep = format!(
        r#"{{"target":"m","arguments":{}1{}}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    for body in [
        deep,
        r#"{"target":"m","arguments":[1e400]}"#.to_owned(),
        r#"{"target":"m","arguments":["\ud800"]}"#.to_owned(),
    ] {
        let r = server
            .rest_with(
                "POST",
                SEND,
                Some(&server.rest_token(SEND)),
                Some(("application/json", body.clone().into_bytes())),
            )
            .await?;
        assert_error(&r, 400, None);
        assert!(r.json()?["target"] == "arguments", "{}", r.body);
    }
    // MessagePack bodies by the same rule.
    let mut deep = rmpv::Value::from(1);
    for _ in 0..200 {
        deep = rmpv::Value::Array(vec![deep]);
    }
    let message = rmpv::Value::Map(vec![
        (rmpv::Value::from("target"), rmpv::Value::from("m")),
        (
            rmpv::Value::from("arguments"),
            rmpv::Value::Array(vec![deep]),
        ),
    ]);
    let mut bytes = Vec::new();
    rmpv::encode::write_value(&mut bytes, &message)?;
    let r = server
        .rest_with(
            "POST",
            SEND,
            Some(&server.rest_token(SEND)),
            Some(("application/x-msgpack", bytes)),
        )
        .await?;
    assert_error(&r, 400, None);
    Ok(())
}

#[tokio::test]
async fn key_rotation_accepts_every_configured_key() -> anyhow::Result<()> {
    let server = Server::start(
        bin(),
        ServerOptions {
            access_keys: vec!["primary-key-1".into(), "secondary-key-2".into()],
            ..Default::default()
        },
    )
    .await?;
    let host = format!("http://{}", server.addr.ip());
    for key in ["primary-key-1", "secondary-key-2"] {
        let token = mint_rest_token(key, &format!("{host}{SEND}"), None, now_secs(), 60);
        let r = server
            .rest_with(
                "POST",
                SEND,
                Some(&token),
                Some(("application/json", br#"{"target":"m"}"#.to_vec())),
            )
            .await?;
        assert_status(&r, 202);
    }
    Ok(())
}

#[tokio::test]
async fn invalid_input_is_400_with_error_detail() -> anyhow::Result<()> {
    let server = server().await?;
    type Case<'a> = (&'a str, &'a str, Option<(&'a str, Vec<u8>)>);
    let cases: Vec<Case> = vec![
        (
            "POST",
            "/api/hubs/my-hub/:send?api-version=2022-06-01",
            Some(("application/json", br#"{"target":"m"}"#.to_vec())),
        ),
        (
            "POST",
            "/api/hubs/1hub/:send?api-version=2022-06-01",
            Some(("application/json", br#"{"target":"m"}"#.to_vec())),
        ),
        (
            "POST",
            "/api/hubs/chat/:send?application=bad-app&api-version=2022-06-01",
            Some(("application/json", br#"{"target":"m"}"#.to_vec())),
        ),
        ("POST", SEND, None),
        (
            "POST",
            SEND,
            Some(("application/json", b"{not json".to_vec())),
        ),
        (
            "POST",
            SEND,
            Some(("application/json", br#"{"arguments":[1]}"#.to_vec())),
        ),
        (
            "POST",
            SEND,
            Some((
                "application/json",
                br#"{"target":"m","arguments":"x"}"#.to_vec(),
            )),
        ),
        (
            "POST",
            SEND,
            Some(("application/octet-stream", b"\x92\x01\x02".to_vec())),
        ),
        (
            "POST",
            "/api/hubs/chat/:send",
            Some(("application/json", br#"{"target":"m"}"#.to_vec())),
        ),
        (
            "POST",
            "/api/hubs/chat/:send?api-version=2019-01-01",
            Some(("application/json", br#"{"target":"m"}"#.to_vec())),
        ),
        (
            "POST",
            "/api/hubs/chat/groups/%20%20/:send?api-version=2022-06-01",
            Some(("application/json", br#"{"target":"m"}"#.to_vec())),
        ),
        (
            "PUT",
            "/api/hubs/chat/users/u/groups/g?ttl=-1&api-version=2022-06-01",
            None,
        ),
        (
            "PUT",
            "/api/hubs/chat/users/u/groups/g?ttl=soon&api-version=2022-06-01",
            None,
        ),
        (
            "GET",
            "/api/hubs/chat/groups/g/connections?maxpagesize=201&api-version=2024-12-01",
            None,
        ),
        (
            "GET",
            "/api/hubs/chat/groups/g/connections?continuationToken=%21%21&api-version=2024-12-01",
            None,
        ),
    ];
    for (method, path, body) in cases {
        let token = server.rest_token(path);
        let r = server.rest_with(method, path, Some(&token), body).await?;
        assert_eq!(r.status, 400, "{method} {path}: {}", r.body);
        let detail = r.json()?;
        assert!(
            detail["code"].is_string() && detail["message"].is_string(),
            "{method} {path}: {detail}"
        );
    }
    let long_group = "g".repeat(1025);
    let path = format!("/api/hubs/chat/groups/{long_group}/:send?api-version=2022-06-01");
    let r = server
        .rest("POST", &path, Some(json!({"target": "m"})))
        .await?;
    assert_error(&r, 400, None);
    Ok(())
}

#[tokio::test]
async fn bodies_over_one_megabyte_are_413() -> anyhow::Result<()> {
    let server = server().await?;
    let big = format!(
        r#"{{"target":"m","arguments":["{}"]}}"#,
        "x".repeat(1024 * 1024)
    );
    let r = server
        .rest_with(
            "POST",
            SEND,
            Some(&server.rest_token(SEND)),
            Some(("application/json", big.into_bytes())),
        )
        .await?;
    assert_error(&r, 413, None);
    let fits = format!(
        r#"{{"target":"m","arguments":["{}"]}}"#,
        "x".repeat(1000 * 1000)
    );
    let r = server
        .rest_with(
            "POST",
            SEND,
            Some(&server.rest_token(SEND)),
            Some(("application/json", fits.into_bytes())),
        )
        .await?;
    assert_status(&r, 202);
    Ok(())
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_with_error_detail() -> anyhow::Result<()> {
    let server = server().await?;
    let r = server
        .rest(
            "GET",
            "/api/hubs/chat/nothing-here?api-version=2022-06-01",
            None,
        )
        .await?;
    assert_error(&r, 404, None);
    let r = server
        .rest(
            "PATCH",
            "/api/hubs/chat/users/u?api-version=2022-06-01",
            None,
        )
        .await?;
    assert_error(&r, 405, None);
    Ok(())
}

#[tokio::test]
async fn health_needs_no_token_and_metrics_are_exposed() -> anyhow::Result<()> {
    let server = server().await?;
    for (method, path) in [
        ("HEAD", "/api/health?api-version=2022-06-01"),
        ("GET", "/api/health"),
        ("HEAD", "/api/v1/health"),
    ] {
        assert_status(&server.rest_with(method, path, None, None).await?, 200);
    }
    assert_status(&server.rest_with("GET", "/readyz", None, None).await?, 200);
    assert_status(
        &server
            .rest("POST", SEND, Some(json!({"target": "m"})))
            .await?,
        202,
    );
    let metrics = server.rest_with("GET", "/metrics", None, None).await?;
    assert_status(&metrics, 200);
    for name in [
        "switchboard_http_requests_total",
        "switchboard_connections",
        "switchboard_raft_term",
        "switchboard_fanout_duration_seconds_bucket",
    ] {
        assert!(
            metrics.body.contains(name),
            "{name} missing from /metrics:\n{}",
            metrics.body
        );
    }
    assert!(
        metrics.body.contains("route=\"/api/hubs/{hub}/:send\""),
        "matched route label:\n{}",
        metrics.body
    );
    Ok(())
}
