//! Bodies: the one boxed type the ingress answers with, and [`Upload`], the
//! client's request body on its way to a replica.
//!
//! An `Upload` takes the client's body out of a shared slot only when the
//! upstream connection first asks for it, so when connecting fails the body
//! is still in the slot and a retry on another replica can send it. It also
//! counts bytes against the body limit, streaming (nothing is buffered).

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body as _, Incoming};

/// A boxed error, as bodies and the upstream client report them.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of every answer the ingress gives.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// A body of fixed bytes.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|e| match e {})
        .boxed_unsync()
}

/// An empty body.
pub fn empty() -> Body {
    Empty::new().map_err(|e| match e {}).boxed_unsync()
}

/// A replica's answer body, passed through as it streams.
pub fn stream(body: Incoming) -> Body {
    body.map_err(BoxError::from).boxed_unsync()
}

/// The request body grew past the limit.
#[derive(Debug, thiserror::Error)]
#[error("request body larger than {0} bytes")]
pub struct TooLarge(pub u64);

/// Where a client's body waits until an upstream connection takes it.
#[derive(Clone)]
pub struct Slot {
    body: Arc<Mutex<Option<Incoming>>>,
    over: Arc<AtomicBool>,
    end: bool,
    hint: SizeHint,
    max: u64,
}

impl Slot {
    /// Holds `body`, to be sent with at most `max` bytes.
    pub fn new(body: Incoming, max: u64) -> Self {
        Slot {
            end: body.is_end_stream(),
            hint: body.size_hint(),
            body: Arc::new(Mutex::new(Some(body))),
            over: Arc::new(AtomicBool::new(false)),
            max,
        }
    }

    /// Whether the body is still here (no connection has started sending
    /// it), so the request may be sent again.
    pub fn untouched(&self) -> bool {
        self.body.lock().map(|b| b.is_some()).unwrap_or(false)
    }

    /// Whether the body passed the limit.
    pub fn over_limit(&self) -> bool {
        self.over.load(Ordering::Relaxed)
    }

    /// A body for one attempt.
    pub fn upload(&self) -> Upload {
        Upload {
            slot: self.clone(),
            inner: None,
            seen: 0,
        }
    }
}

/// The client's body as one upstream attempt sends it.
pub struct Upload {
    slot: Slot,
    inner: Option<Incoming>,
    seen: u64,
}

impl hyper::body::Body for Upload {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.inner.is_none() {
            let taken = match this.slot.body.lock() {
                Ok(mut slot) => slot.take(),
                Err(_) => None,
            };
            match taken {
                Some(body) => this.inner = Some(body),
                None => return Poll::Ready(Some(Err("request body already sent".into()))),
            }
        }
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.seen += data.len() as u64;
                    if this.seen > this.slot.max {
                        this.slot.over.store(true, Ordering::Relaxed);
                        return Poll::Ready(Some(Err(TooLarge(this.slot.max).into())));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Some(inner) => inner.is_end_stream(),
            None => self.slot.end,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Some(inner) => inner.size_hint(),
            None => self.slot.hint,
        }
    }
}
