//! The transport between the decoding loop and a verifier. The loop encodes and decodes protocol
//! frames itself (so byte counts are the same whatever carries them); a link only moves frames.
//!
//! Implementations: [`LocalLink`] (a verifier session in the same process: tests, evaluation),
//! the native WebSocket link in `hlm-cli`, and the browser WebSocket in `web-client`.

use crate::verifier::VerifierSession;
use crate::{EngineError, Result};
use std::collections::VecDeque;

/// Moves binary frames to and from a verifier. Not `Send`-bound so that browser links can hold
/// JavaScript objects.
#[allow(async_fn_in_trait)]
pub trait VerifierLink {
    async fn send(&mut self, frame: Vec<u8>) -> Result<()>;
    async fn recv(&mut self) -> Result<Vec<u8>>;
    /// A reply that has already arrived, taken without waiting; `None` when none has (or when
    /// the link cannot tell, the default). The pipelined loop stops drafting ahead as soon as
    /// a verdict is there ([`crate::pipeline`]).
    fn try_recv(&mut self) -> Option<Result<Vec<u8>>> {
        None
    }
    /// Ends the connection politely (a WebSocket close handshake); the default does nothing.
    async fn close(&mut self) -> Result<()> {
        Ok(())
    }
    /// Opens a fresh connection after this one failed, waiting between attempts as the link sees
    /// fit (backoff), and gives up with an error when its patience is spent. The decoding loop
    /// then re-establishes the session by replaying its committed tokens
    /// ([`crate::decode`]). The default cannot reconnect.
    async fn reconnect(&mut self) -> Result<()> {
        Err(EngineError::Link("this link cannot reconnect".into()))
    }
    /// Called once per drafted token: a link on a single-threaded event loop (the browser's)
    /// yields here now and then, so that the page or worker stays responsive (an abort message
    /// can arrive). The default does nothing.
    async fn yield_now(&mut self) {}
}

/// A verifier in the same process: each frame sent is handled at once and its reply queued.
pub struct LocalLink {
    pub session: VerifierSession,
    replies: VecDeque<Vec<u8>>,
    closed: Option<String>,
}

impl LocalLink {
    pub fn new(session: VerifierSession) -> Self {
        Self {
            session,
            replies: VecDeque::new(),
            closed: None,
        }
    }
}

impl LocalLink {
    fn take(&mut self, reply: crate::verifier::Reply) {
        if let Some(f) = reply.frame {
            self.replies.push_back(f);
        }
        if let Some((code, msg)) = reply.close {
            self.closed = Some(format!("{code:?}: {msg}"));
        }
    }
}

impl VerifierLink for LocalLink {
    async fn send(&mut self, frame: Vec<u8>) -> Result<()> {
        if let Some(why) = &self.closed {
            return Err(EngineError::Link(format!("connection closed: {why}")));
        }
        let reply = self.session.handle_frame(&frame);
        self.take(reply);
        Ok(())
    }

    fn try_recv(&mut self) -> Option<Result<Vec<u8>>> {
        self.replies.pop_front().map(Ok)
    }

    async fn recv(&mut self) -> Result<Vec<u8>> {
        // The verifier's own generation runs a token per reply asked for, as over a socket
        // where a message sent meanwhile (a `Reset`) ends it between tokens.
        if self.replies.is_empty() && self.closed.is_none() && self.session.generating() {
            let reply = self.session.handle_continue();
            self.take(reply);
        }
        self.replies.pop_front().ok_or_else(|| {
            EngineError::Link(match &self.closed {
                Some(why) => format!("connection closed: {why}"),
                None => "no reply pending".into(),
            })
        })
    }
}

/// Runs a future to completion on this thread. Enough for loops over [`LocalLink`], which never
/// waits (the evaluation harness, tests); a real network link needs an async runtime.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let mut f = std::pin::pin!(f);
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}
