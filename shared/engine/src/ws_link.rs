//! The native WebSocket link to a verifier (tokio-tungstenite; feature `ws-client`): `ws://`, and
//! `wss://` through rustls, trusting Mozilla's root certificates plus, optionally, the
//! certificates of a private CA ([`LinkOptions::ca_cert`]).

use crate::link::VerifierLink;
use crate::{EngineError, Result};
use futures_util::{SinkExt, StreamExt};
use hlm_protocol::MAX_MESSAGE_BYTES;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

pub struct WsLink {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    url: String,
    token: Option<String>,
    /// The TLS settings `wss://` connections (and reconnections) use.
    tls: Arc<rustls::ClientConfig>,
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
        Self::connect_with(
            url,
            &LinkOptions {
                token,
                ca_cert: None,
            },
        )
        .await
    }

    /// Connects to `ws://…` or `wss://…` with `options`.
    pub async fn connect_with(url: &str, options: &LinkOptions<'_>) -> Result<Self> {
        let tls = Arc::new(tls_config(options.ca_cert)?);
        Ok(Self {
            ws: Self::open(url, options.token, &tls).await?,
            url: url.to_string(),
            token: options.token.map(str::to_string),
            tls,
            reconnect_patience: Duration::from_secs(60),
        })
    }

    async fn open(
        url: &str,
        token: Option<&str>,
        tls: &Arc<rustls::ClientConfig>,
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
        let connector = Connector::Rustls(tls.clone());
        let (ws, _) = tokio_tungstenite::connect_async_tls_with_config(
            request,
            Some(config),
            true,
            Some(connector),
        )
        .await
        .map_err(|e| EngineError::Link(format!("verifier unreachable at {url}: {e}")))?;
        Ok(ws)
    }
}

/// How to reach a verifier besides its URL.
#[derive(Debug, Clone, Copy, Default)]
pub struct LinkOptions<'a> {
    /// Presented as `Authorization: Bearer <token>`.
    pub token: Option<&'a str>,
    /// A PEM file of CA certificates trusted for `wss://` besides Mozilla's roots (a private CA,
    /// a test certificate).
    pub ca_cert: Option<&'a Path>,
}

/// rustls (ring) with Mozilla's roots and the certificates of `ca_cert`.
fn tls_config(ca_cert: Option<&Path>) -> Result<rustls::ClientConfig> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let mut roots =
        rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_cert {
        let bad = |e: String| EngineError::Link(format!("CA certificate {}: {e}", path.display()));
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| bad(e.to_string()))?
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| bad(e.to_string()))?;
        if certs.is_empty() {
            return Err(bad("no PEM certificate in the file".into()));
        }
        for c in certs {
            roots.add(c).map_err(|e| bad(e.to_string()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| EngineError::Link(format!("TLS settings: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

impl VerifierLink for WsLink {
    /// Tries again with exponential backoff (100 ms doubling to 5 s) for `reconnect_patience`.
    async fn reconnect(&mut self) -> Result<()> {
        let deadline = tokio::time::Instant::now() + self.reconnect_patience;
        let mut wait = FIRST_BACKOFF;
        loop {
            match Self::open(&self.url, self.token.as_deref(), &self.tls).await {
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

    /// Polls the socket once: a frame already received is returned, nothing waits (reading a
    /// WebSocket stream is cancel-safe between frames).
    fn try_recv(&mut self) -> Option<Result<Vec<u8>>> {
        futures_util::FutureExt::now_or_never(self.recv())
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
