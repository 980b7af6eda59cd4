//! The transport of a WebSocket connection: the client's own WebSocket, or, after a stateful
//! reconnect that landed on another gateway, that WebSocket relayed over the cluster plane.
//!
//! Both are a `Stream + Sink` of WebSocket messages, so the connection task cannot tell them
//! apart; [`ClientSocket`] is the one type it runs on.

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::ws::{Message, Utf8Bytes, WebSocket};
use futures::{Sink, Stream};
use switchboard_cluster::proto::resume_frame::Frame;
use switchboard_cluster::proto::ResumeFrame;
use tokio_util::sync::PollSender;

fn io(error: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(error.to_string())
}

/// A WebSocket connection's transport.
// The WebSocket inline on purpose: it is every connection's transport, the relayed one rare.
#[allow(clippy::large_enum_variant)]
pub(crate) enum ClientSocket {
    Ws(WebSocket),
    /// Boxed: rare, and larger than a WebSocket; every connection's task holds this enum.
    Relayed(Box<RelayedSocket>),
}

/// A client's WebSocket that another gateway terminates, relayed as `ResumeFrame`s.
pub(crate) struct RelayedSocket {
    inbound: tonic::Streaming<ResumeFrame>,
    outbound: PollSender<Result<ResumeFrame, tonic::Status>>,
}

impl RelayedSocket {
    pub(crate) fn new(
        inbound: tonic::Streaming<ResumeFrame>,
        outbound: tokio::sync::mpsc::Sender<Result<ResumeFrame, tonic::Status>>,
    ) -> RelayedSocket {
        RelayedSocket {
            inbound,
            outbound: PollSender::new(outbound),
        }
    }
}

/// A frame of the relay stream for `message` (`None` for pings and pongs, which the relaying
/// gateway answers itself).
pub(crate) fn to_frame(message: Message) -> Option<ResumeFrame> {
    let frame = match message {
        Message::Text(text) => Frame::Text(bytes::Bytes::from(text)),
        Message::Binary(bytes) => Frame::Binary(bytes),
        Message::Close(_) => Frame::Close(String::new()),
        Message::Ping(_) | Message::Pong(_) => return None,
    };
    Some(ResumeFrame { frame: Some(frame) })
}

/// The message a relay frame carries; `Err` with why for a close.
pub(crate) fn from_frame(frame: ResumeFrame) -> Result<Option<Message>, String> {
    match frame.frame {
        Some(Frame::Text(text)) => Utf8Bytes::try_from(text)
            .map(|t| Some(Message::Text(t)))
            .map_err(|_| "a text frame that is not UTF-8".to_owned()),
        Some(Frame::Binary(bytes)) => Ok(Some(Message::Binary(bytes))),
        Some(Frame::Close(why)) => Err(why),
        Some(Frame::Target(_)) | None => Ok(None),
    }
}

impl Stream for ClientSocket {
    type Item = Result<Message, std::io::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.get_mut() {
            ClientSocket::Ws(ws) => Pin::new(ws).poll_next(cx).map(|m| m.map(|r| r.map_err(io))),
            ClientSocket::Relayed(relayed) => loop {
                return match Pin::new(&mut relayed.inbound).poll_next(cx) {
                    Poll::Ready(Some(Ok(frame))) => match from_frame(frame) {
                        Ok(Some(message)) => Poll::Ready(Some(Ok(message))),
                        Ok(None) => continue,
                        Err(_) => Poll::Ready(Some(Ok(Message::Close(None)))),
                    },
                    Poll::Ready(Some(Err(status))) => Poll::Ready(Some(Err(io(status)))),
                    Poll::Ready(None) => Poll::Ready(None),
                    Poll::Pending => Poll::Pending,
                };
            },
        }
    }
}

impl Sink<Message> for ClientSocket {
    type Error = std::io::Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        match self.get_mut() {
            ClientSocket::Ws(ws) => Pin::new(ws).poll_ready(cx).map_err(io),
            ClientSocket::Relayed(relayed) => relayed.outbound.poll_reserve(cx).map_err(io),
        }
    }

    fn start_send(self: Pin<&mut Self>, message: Message) -> Result<(), Self::Error> {
        match self.get_mut() {
            ClientSocket::Ws(ws) => Pin::new(ws).start_send(message).map_err(io),
            ClientSocket::Relayed(relayed) => match to_frame(message) {
                Some(frame) => relayed.outbound.send_item(Ok(frame)).map_err(io),
                // Nothing to send; the reserved slot is given back.
                None => {
                    relayed.outbound.abort_send();
                    Ok(())
                }
            },
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        match self.get_mut() {
            ClientSocket::Ws(ws) => Pin::new(ws).poll_flush(cx).map_err(io),
            ClientSocket::Relayed(_) => Poll::Ready(Ok(())),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        match self.get_mut() {
            ClientSocket::Ws(ws) => Pin::new(ws).poll_close(cx).map_err(io),
            ClientSocket::Relayed(relayed) => {
                relayed.outbound.close();
                Poll::Ready(Ok(()))
            }
        }
    }
}
