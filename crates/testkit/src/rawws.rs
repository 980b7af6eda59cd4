//! A minimal SignalR client over a raw WebSocket, for what the official client will not do on
//! purpose: stop reading (slow consumers), send malformed frames, or hold many idle connections.

use std::time::Duration;

use anyhow::{bail, Context};
use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::Server;

pub struct RawClient {
    pub connection_id: String,
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl RawClient {
    /// Negotiates and opens the WebSocket, without the hub protocol handshake.
    pub async fn open(server: &Server, hub: &str, user: Option<&str>) -> anyhow::Result<RawClient> {
        let token = server.client_token(hub, user);
        let negotiate = reqwest::Client::new()
            .post(server.url(&format!("/client/negotiate?hub={hub}&negotiateVersion=1")))
            .bearer_auth(&token)
            .send()
            .await?;
        if negotiate.status() != 200 {
            bail!("negotiate answered {}", negotiate.status());
        }
        let body: serde_json::Value = negotiate.json().await?;
        let connection_id = body["connectionId"]
            .as_str()
            .context("connectionId")?
            .to_owned();
        let ticket = body["connectionToken"]
            .as_str()
            .context("connectionToken")?;
        let url = format!(
            "ws://{}/client/?hub={hub}&id={ticket}&access_token={token}",
            server.addr
        );
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .context("websocket connect")?;
        Ok(RawClient { connection_id, ws })
    }

    /// Negotiates, connects and completes a JSON handshake.
    pub async fn connect_json(
        server: &Server,
        hub: &str,
        user: Option<&str>,
    ) -> anyhow::Result<RawClient> {
        let mut client = Self::open(server, hub, user).await?;
        client
            .send_text("{\"protocol\":\"json\",\"version\":1}\u{1e}")
            .await?;
        let reply = client.recv_text(Duration::from_secs(10)).await?;
        if reply != "{}\u{1e}" {
            bail!("handshake answered {reply:?}");
        }
        Ok(client)
    }

    pub async fn send_text(&mut self, text: &str) -> anyhow::Result<()> {
        self.ws.send(WsMessage::text(text)).await?;
        Ok(())
    }

    pub async fn send_binary(&mut self, bytes: Vec<u8>) -> anyhow::Result<()> {
        self.ws.send(WsMessage::binary(bytes)).await?;
        Ok(())
    }

    /// The next text message (skipping pings/pongs).
    pub async fn recv_text(&mut self, within: Duration) -> anyhow::Result<String> {
        loop {
            let next = tokio::time::timeout(within, self.ws.next())
                .await
                .context("timed out waiting for a message")?;
            match next {
                Some(Ok(WsMessage::Text(t))) => return Ok(t.to_string()),
                Some(Ok(WsMessage::Binary(b))) => {
                    return Ok(String::from_utf8_lossy(&b).into_owned())
                }
                Some(Ok(WsMessage::Close(frame))) => bail!("closed: {frame:?}"),
                Some(Ok(_)) => continue,
                Some(Err(e)) => bail!("websocket error: {e}"),
                None => bail!("connection ended"),
            }
        }
    }

    /// Reads until the server closes; returns every text received on the way.
    pub async fn read_until_closed(&mut self, within: Duration) -> anyhow::Result<Vec<String>> {
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let next = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .context("server did not close")?;
            match next {
                Some(Ok(WsMessage::Text(t))) => seen.push(t.to_string()),
                Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => return Ok(seen),
                Some(Ok(_)) => {}
            }
        }
    }
}
