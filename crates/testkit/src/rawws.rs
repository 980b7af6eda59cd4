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

/// What negotiate handed out: the connection id, the connection token and the access token used.
#[derive(Debug, Clone)]
pub struct Negotiated {
    pub connection_id: String,
    pub ticket: String,
    pub token: String,
}

/// A WebSocket upgrade the server refused: its status and body.
#[derive(Debug, Clone)]
pub struct Refused {
    pub status: u16,
    pub body: String,
}

impl RawClient {
    /// Negotiates only.
    pub async fn negotiate(
        server: &Server,
        hub: &str,
        user: Option<&str>,
    ) -> anyhow::Result<Negotiated> {
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
        Ok(Negotiated {
            connection_id: body["connectionId"]
                .as_str()
                .context("connectionId")?
                .to_owned(),
            ticket: body["connectionToken"]
                .as_str()
                .context("connectionToken")?
                .to_owned(),
            token,
        })
    }

    /// Opens the WebSocket with a negotiated ticket; `Err(Refused)` when the upgrade is refused.
    pub async fn connect_ticket(
        server: &Server,
        hub: &str,
        negotiated: &Negotiated,
    ) -> anyhow::Result<Result<RawClient, Refused>> {
        let url = format!(
            "ws://{}/client/?hub={hub}&id={}&access_token={}",
            server.addr, negotiated.ticket, negotiated.token
        );
        match tokio_tungstenite::connect_async(url).await {
            Ok((ws, _)) => Ok(Ok(RawClient {
                connection_id: negotiated.connection_id.clone(),
                ws,
            })),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Ok(Err(Refused {
                status: response.status().as_u16(),
                body: response
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default(),
            })),
            Err(e) => Err(e).context("websocket connect"),
        }
    }

    /// Completes a JSON handshake on an opened socket.
    pub async fn handshake_json(&mut self) -> anyhow::Result<()> {
        self.send_text("{\"protocol\":\"json\",\"version\":1}\u{1e}")
            .await?;
        let reply = self.recv_text(Duration::from_secs(10)).await?;
        if reply != "{}\u{1e}" {
            bail!("handshake answered {reply:?}");
        }
        Ok(())
    }

    /// Negotiates and opens the WebSocket, without the hub protocol handshake.
    pub async fn open(server: &Server, hub: &str, user: Option<&str>) -> anyhow::Result<RawClient> {
        let negotiated = Self::negotiate(server, hub, user).await?;
        match Self::connect_ticket(server, hub, &negotiated).await? {
            Ok(client) => Ok(client),
            Err(refused) => bail!("websocket connect refused: {refused:?}"),
        }
    }

    /// Negotiates, connects and completes a JSON handshake.
    pub async fn connect_json(
        server: &Server,
        hub: &str,
        user: Option<&str>,
    ) -> anyhow::Result<RawClient> {
        let mut client = Self::open(server, hub, user).await?;
        client.handshake_json().await?;
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
