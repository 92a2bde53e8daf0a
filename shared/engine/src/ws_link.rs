//! The native WebSocket link to a verifier (tokio-tungstenite; feature `ws-client`).

use crate::link::VerifierLink;
use crate::{EngineError, Result};
use futures_util::{SinkExt, StreamExt};
use hlm_protocol::MAX_MESSAGE_BYTES;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub struct WsLink {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    url: String,
    token: Option<String>,
    /// How long [`VerifierLink::reconnect`] keeps trying.
    pub reconnect_patience: Duration,
}

/// First wait between reconnection attempts; it doubles up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_millis(100);
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

impl WsLink {
    /// Connects to `url` (`ws://host:port/ws`).
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with_token(url, None).await
    }

    /// Connects presenting `token` as `Authorization: Bearer <token>`.
    pub async fn connect_with_token(url: &str, token: Option<&str>) -> Result<Self> {
        Ok(Self {
            ws: Self::open(url, token).await?,
            url: url.to_string(),
            token: token.map(str::to_string),
            reconnect_patience: Duration::from_secs(60),
        })
    }

    async fn open(
        url: &str,
        token: Option<&str>,
    ) -> Result<WebSocketStream<MaybeTlsStream<TcpStream>>> {
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
        Ok(ws)
    }
}

impl VerifierLink for WsLink {
    /// Tries again with exponential backoff (100 ms doubling to 5 s) for `reconnect_patience`.
    async fn reconnect(&mut self) -> Result<()> {
        let deadline = tokio::time::Instant::now() + self.reconnect_patience;
        let mut wait = FIRST_BACKOFF;
        loop {
            match Self::open(&self.url, self.token.as_deref()).await {
                Ok(ws) => {
                    self.ws = ws;
                    return Ok(());
                }
                Err(e) if tokio::time::Instant::now() + wait > deadline => return Err(e),
                Err(_) => {
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

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
