//! `switchboard token`: mint tokens the way the server SDK does, from a connection string.

use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use switchboard_auth::{mint_client_token, mint_rest_token, Claims, ConnectionString};

use crate::cli::{TokenArgs, TokenField};

pub fn run(args: TokenArgs) -> ExitCode {
    match mint(&args) {
        Ok(lines) => {
            println!("{lines}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("switchboard token: {e}");
            ExitCode::from(64)
        }
    }
}

fn mint(args: &TokenArgs) -> Result<String, String> {
    let cs: ConnectionString = args
        .connection_string
        .parse()
        .map_err(|e| format!("invalid connection string: {e}"))?;
    let key = cs
        .access_key
        .clone()
        .ok_or("the connection string has no AccessKey")?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    if args.admin {
        let url = format!(
            "{}{}",
            cs.base_url(),
            switchboard_gateway::admin::AUDIENCE_PATH
        );
        let token = mint_rest_token(&key, &url, None, now, args.lifetime);
        return Ok(render(args, &url, &token));
    }
    if let Some(rest) = &args.rest {
        let url = if rest.starts_with("http://") || rest.starts_with("https://") {
            rest.clone()
        } else {
            format!("{}/{}", cs.base_url(), rest.trim_start_matches('/'))
        };
        let token = mint_rest_token(&key, &url, args.user.as_deref(), now, args.lifetime);
        return Ok(render(args, &url, &token));
    }
    let hub = switchboard_core::names::prefixed_hub(args.application.as_deref(), &args.hub)
        .map_err(|e| e.message)?;
    let base = cs.client_base_url();
    let token = mint_client_token(
        &key,
        &base,
        &hub,
        args.user.as_deref(),
        &Claims::new(),
        now,
        args.lifetime,
    );
    let url = format!("{base}/client/?hub={hub}");
    Ok(render(args, &url, &token))
}

fn render(args: &TokenArgs, url: &str, token: &str) -> String {
    match (args.only, args.json) {
        (Some(TokenField::Url), _) => url.to_owned(),
        (Some(TokenField::Token), _) => token.to_owned(),
        (None, true) => serde_json::json!({ "url": url, "accessToken": token }).to_string(),
        (None, false) => format!("url: {url}\naccessToken: {token}"),
    }
}
