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
        Self::connect_with_token(url, None).await
    }

    /// Connects presenting `token` as `Authorization: Bearer <token>`.
    pub async fn connect_with_token(url: &str, token: Option<&str>) -> Result<Self> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let config = WebSocketConfig::default()
            .max_message_size(Some(MAX_MESSAGE_BYTES))
            .max_frame_size(Some(MAX_MESSAGE_BYTES));
        let mut request = url
            .into_client_request()
            .map_err(|e| EngineError::Link(format!("bad verifier URL {url}: {e}")))?;
        if let Some(t) = token {
            let value = format!("Bearer {t}")
                .parse()
                .map_err(|_| EngineError::Link("the token is not a valid header value".into()))?;
            request.headers_mut().insert("authorization", value);
        }
        let (ws, _) = tokio_tungstenite::connect_async_with_config(request, Some(config), true)
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
