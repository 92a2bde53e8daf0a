//! The native WebSocket link to a verifier (tokio-tungstenite; feature `ws-client`).

use crate::link::VerifierLink;
use crate::{EngineError, Result};
use futures_util::{SinkExt, StreamExt};
use hlm_protocol::MAX_MESSAGE_BYTES;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub struct WsLink {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl WsLink {
    /// Connects to `url` (`ws://host:port/ws`).
    pub async fn connect(url: &str) -> Result<Self> {
        let config = WebSocketConfig::default()
            .max_message_size(Some(MAX_MESSAGE_BYTES))
            .max_frame_size(Some(MAX_MESSAGE_BYTES));
        let (ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), true)
            .await
            .map_err(|e| EngineError::Link(format!("verifier unreachable at {url}: {e}")))?;
        Ok(Self { ws })
    }
}

impl VerifierLink for WsLink {
    async fn close(&mut self) -> Result<()> {
        self.ws
            .close(None)
            .await
            .map_err(|e| EngineError::Link(e.to_string()))
    }

    async fn send(&mut self, frame: Vec<u8>) -> Result<()> {
        self.ws
            .send(Message::Binary(frame.into()))
            .await
            .map_err(|e| EngineError::Link(e.to_string()))
    }

    async fn recv(&mut self) -> Result<Vec<u8>> {
        loop {
            match self.ws.next().await {
                Some(Ok(Message::Binary(b))) => return Ok(b.to_vec()),
                Some(Ok(Message::Close(frame))) => {
                    return Err(EngineError::Link(match frame {
                        Some(f) => format!(
                            "verifier closed the connection ({}): {}",
                            u16::from(f.code),
                            f.reason
                        ),
                        None => "verifier closed the connection".into(),
                    }))
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(EngineError::Link(e.to_string())),
                None => return Err(EngineError::Link("connection ended".into())),
            }
        }
    }
}
