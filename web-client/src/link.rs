//! [`VerifierLink`] over the browser's WebSocket (`web_sys::WebSocket`).
//!
//! Browsers cannot set headers on a WebSocket, so the token travels as a subprotocol: the link
//! offers `hlm-v1` and `hlm-token.<token>`, and the server selects `hlm-v1`. Frames arrive through
//! `onmessage` into an inbox that `recv` awaits; a close (or a failed connection) wakes it with an
//! error. `reconnect` retries with backoff (100 ms doubling to 5 s) for `patience_ms`.

use hlm_engine::link::VerifierLink;
use hlm_engine::{EngineError, Result};
use js_sys::{Array, ArrayBuffer, Uint8Array};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};
use wasm_bindgen::prelude::*;
use web_sys::{BinaryType, CloseEvent, MessageEvent, WebSocket};

#[derive(Default)]
struct Inbox {
    frames: VecDeque<Vec<u8>>,
    open: bool,
    /// Why the connection ended (close code and reason), once it has.
    closed: Option<String>,
    waker: Option<Waker>,
}

impl Inbox {
    fn wake(&mut self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
}

/// `onmessage`, `onopen`, `onclose`, `onerror`.
type Handlers = (
    Closure<dyn FnMut(MessageEvent)>,
    Closure<dyn FnMut(JsValue)>,
    Closure<dyn FnMut(CloseEvent)>,
    Closure<dyn FnMut(JsValue)>,
);

/// One open WebSocket with its event handlers (kept alive as long as the socket).
struct Socket {
    ws: WebSocket,
    inbox: Rc<RefCell<Inbox>>,
    _handlers: Handlers,
}

impl Drop for Socket {
    fn drop(&mut self) {
        self.ws.set_onmessage(None);
        self.ws.set_onopen(None);
        self.ws.set_onclose(None);
        self.ws.set_onerror(None);
        let _ = self.ws.close();
    }
}

pub struct BrowserLink {
    socket: Socket,
    url: String,
    token: Option<String>,
    /// How long `reconnect` keeps trying (milliseconds).
    pub patience_ms: f64,
    last_yield: f64,
}

impl BrowserLink {
    /// Opens `url` (`ws://…/ws` or `wss://…/ws`) and waits until the socket is open.
    pub async fn connect(url: &str, token: Option<&str>) -> Result<Self> {
        Ok(Self {
            socket: open(url, token).await?,
            url: url.to_string(),
            token: token.map(str::to_string),
            patience_ms: 60_000.0,
            last_yield: js_sys::Date::now(),
        })
    }
}

async fn open(url: &str, token: Option<&str>) -> Result<Socket> {
    let protocols = Array::new();
    protocols.push(&JsValue::from_str("hlm-v1"));
    if let Some(t) = token {
        protocols.push(&JsValue::from_str(&format!("hlm-token.{t}")));
    }
    let ws = WebSocket::new_with_str_sequence(url, &protocols).map_err(|e| {
        EngineError::Link(format!("verifier unreachable at {url}: {}", js_text(&e)))
    })?;
    ws.set_binary_type(BinaryType::Arraybuffer);
    let inbox = Rc::new(RefCell::new(Inbox::default()));
    let on_message = {
        let inbox = inbox.clone();
        Closure::<dyn FnMut(MessageEvent)>::new(move |e: MessageEvent| {
            if let Ok(buf) = e.data().dyn_into::<ArrayBuffer>() {
                let mut i = inbox.borrow_mut();
                i.frames.push_back(Uint8Array::new(&buf).to_vec());
                i.wake();
            }
        })
    };
    let on_open = {
        let inbox = inbox.clone();
        Closure::<dyn FnMut(JsValue)>::new(move |_| {
            let mut i = inbox.borrow_mut();
            i.open = true;
            i.wake();
        })
    };
    let on_close = {
        let inbox = inbox.clone();
        Closure::<dyn FnMut(CloseEvent)>::new(move |e: CloseEvent| {
            let mut i = inbox.borrow_mut();
            i.closed = Some(format!("({}) {}", e.code(), e.reason()));
            i.open = false;
            i.wake();
        })
    };
    // Browsers follow an error with a close event; some runtimes (Node 20) do not.
    let on_error = {
        let inbox = inbox.clone();
        Closure::<dyn FnMut(JsValue)>::new(move |_| {
            let mut i = inbox.borrow_mut();
            if i.closed.is_none() {
                i.closed = Some("(1006) connection failed".into());
            }
            i.wake();
        })
    };
    ws.set_onerror(Some(on_error.as_ref().unchecked_ref()));
    ws.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    ws.set_onopen(Some(on_open.as_ref().unchecked_ref()));
    ws.set_onclose(Some(on_close.as_ref().unchecked_ref()));
    let socket = Socket {
        ws,
        inbox,
        _handlers: (on_message, on_open, on_close, on_error),
    };
    poll_fn(|cx| {
        let mut i = socket.inbox.borrow_mut();
        if i.open {
            Poll::Ready(Ok(()))
        } else if i.closed.is_some() {
            Poll::Ready(Err(EngineError::Link(format!(
                "verifier unreachable at {url}"
            ))))
        } else {
            i.waker = Some(cx.waker().clone());
            Poll::Pending
        }
    })
    .await?;
    Ok(socket)
}

impl VerifierLink for BrowserLink {
    async fn send(&mut self, frame: Vec<u8>) -> Result<()> {
        // A closed socket with frames still queued (an Error before the close) lets `recv` report
        // them first; the browser drops what is sent on a closing socket.
        {
            let i = self.socket.inbox.borrow();
            if let (Some(why), true) = (&i.closed, i.frames.is_empty()) {
                return Err(EngineError::Link(format!(
                    "verifier closed the connection {why}"
                )));
            }
        }
        // A copy in JavaScript's own memory: WebSocket.send refuses a view of shared memory (the
        // threaded build's), and the frame is small.
        let copy = Uint8Array::new_with_length(frame.len() as u32);
        copy.copy_from(&frame);
        self.socket
            .ws
            .send_with_array_buffer_view(&copy)
            .map_err(|e| EngineError::Link(format!("send failed: {}", js_text(&e))))
    }

    fn try_recv(&mut self) -> Option<Result<Vec<u8>>> {
        self.socket.inbox.borrow_mut().frames.pop_front().map(Ok)
    }

    async fn recv(&mut self) -> Result<Vec<u8>> {
        let inbox = self.socket.inbox.clone();
        poll_fn(move |cx| {
            let mut i = inbox.borrow_mut();
            if let Some(f) = i.frames.pop_front() {
                Poll::Ready(Ok(f))
            } else if let Some(why) = &i.closed {
                Poll::Ready(Err(EngineError::Link(format!(
                    "verifier closed the connection {why}"
                ))))
            } else {
                i.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }

    async fn close(&mut self) -> Result<()> {
        let _ = self.socket.ws.close_with_code(hlm_protocol::close::NORMAL);
        Ok(())
    }

    async fn reconnect(&mut self) -> Result<()> {
        let deadline = js_sys::Date::now() + self.patience_ms;
        let mut wait = 100.0;
        loop {
            match open(&self.url, self.token.as_deref()).await {
                Ok(s) => {
                    self.socket = s;
                    return Ok(());
                }
                Err(e) if js_sys::Date::now() + wait > deadline => return Err(e),
                Err(_) => {
                    sleep_ms(wait).await;
                    wait = (wait * 2.0).min(5_000.0);
                }
            }
        }
    }

    /// Gives the event loop a turn every 30 ms of drafting (an `abort` message can then arrive).
    async fn yield_now(&mut self) {
        let now = js_sys::Date::now();
        if now - self.last_yield > 30.0 {
            sleep_ms(0.0).await;
            self.last_yield = js_sys::Date::now();
        }
    }
}

/// Waits `ms` milliseconds on the global `setTimeout` (a window or a worker).
pub async fn sleep_ms(ms: f64) {
    let promise = js_sys::Promise::new(&mut |resolve, _reject| {
        let global = js_sys::global();
        let set_timeout = js_sys::Reflect::get(&global, &JsValue::from_str("setTimeout"))
            .ok()
            .and_then(|f| f.dyn_into::<js_sys::Function>().ok());
        match set_timeout {
            Some(f) => {
                if f.call2(&global, &resolve, &JsValue::from_f64(ms)).is_err() {
                    let _ = resolve.call0(&JsValue::NULL);
                }
            }
            None => {
                let _ = resolve.call0(&JsValue::NULL);
            }
        }
    });
    let _ = wasm_bindgen_futures::JsFuture::from(promise).await;
}

/// A JavaScript exception as text.
pub fn js_text(v: &JsValue) -> String {
    v.dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| v.as_string())
        .unwrap_or_else(|| format!("{v:?}"))
}
