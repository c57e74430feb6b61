//! The HTTP server: binds the listen address, serves the routes, shuts down
//! gracefully (finishing requests in flight) when told to.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use futures::Future;
use lb_pkg::keys::Keys;
use lb_pkg::store::Shared;
use warp::http::StatusCode;
use warp::Filter;

/// Who may create an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signup {
    /// Anyone may sign up.
    Open,
    /// Only an admin creates accounts.
    Closed,
}

/// API settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address for the API and UI.
    pub listen: SocketAddr,
    /// Key tree.
    pub keys: Keys,
    /// Signup policy.
    pub signup: Signup,
}

/// Errors of the server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The listen address cannot be bound (in use, not local, no permission).
    #[error("cannot listen on {addr}: {reason}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
}

/// A bound server, ready to run.
pub struct Server {
    addr: SocketAddr,
    serve: std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
}

const READY_TIMEOUT: Duration = Duration::from_secs(2);

impl Server {
    /// Binds the listen address now, so a port in use is reported before
    /// anything else starts. The server stops accepting when `shutdown`
    /// resolves and finishes the requests in flight.
    pub fn bind(
        config: &Config,
        store: Shared,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<Self, Error> {
        let routes = routes(store);
        let (addr, serve) = warp::serve(routes)
            .try_bind_with_graceful_shutdown(config.listen, shutdown)
            .map_err(|e| Error::Bind {
                addr: config.listen,
                reason: innermost(&e),
            })?;
        Ok(Self {
            addr,
            serve: Box::pin(serve),
        })
    }

    /// The bound address (with the real port when 0 was asked).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until shutdown.
    pub async fn run(self) {
        self.serve.await
    }
}

/// The deepest cause of an error ("Address already in use (os error 98)").
fn innermost(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = err;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// Every route of the server.
pub fn routes(
    store: Shared,
) -> impl Filter<Extract = (impl warp::Reply,), Error = Infallible> + Clone {
    let healthz = warp::path!("healthz").and(warp::get()).map(|| "ok");
    let readyz = warp::path!("readyz")
        .and(warp::get())
        .and(warp::any().map(move || store.clone()))
        .and_then(ready);
    healthz.or(readyz).recover(not_found)
}

/// Ready when the store answers within a short time.
async fn ready(store: Shared) -> Result<warp::reply::Response, Infallible> {
    use warp::Reply;
    let reply = match tokio::time::timeout(READY_TIMEOUT, store.revision()).await {
        Ok(Ok(_)) => "ready".into_response(),
        Ok(Err(err)) => {
            warp::reply::with_status(format!("store: {err}"), StatusCode::SERVICE_UNAVAILABLE)
                .into_response()
        }
        Err(_) => warp::reply::with_status(
            "store: timed out".to_string(),
            StatusCode::SERVICE_UNAVAILABLE,
        )
        .into_response(),
    };
    Ok(reply)
}

async fn not_found(rejection: warp::Rejection) -> Result<impl warp::Reply, Infallible> {
    let (status, code, message) = if rejection.is_not_found() {
        (
            StatusCode::NOT_FOUND,
            "not_found",
            "no such route".to_string(),
        )
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "method not allowed".to_string(),
        )
    } else {
        (
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("{rejection:?}"),
        )
    };
    let body = serde_json::json!({"error": {"code": code, "message": message, "field": null}});
    Ok(warp::reply::with_status(warp::reply::json(&body), status))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_pkg::store::embedded::EmbeddedStore;
    use std::sync::Arc;

    #[tokio::test]
    async fn health_and_readiness() {
        let dir = tempfile::tempdir().unwrap();
        let store: Shared = Arc::new(EmbeddedStore::open_dir(dir.path()).await.unwrap());
        let routes = routes(store);
        let res = warp::test::request().path("/healthz").reply(&routes).await;
        assert_eq!(res.status(), 200);
        let res = warp::test::request().path("/readyz").reply(&routes).await;
        assert_eq!(res.status(), 200);
        let res = warp::test::request().path("/nope").reply(&routes).await;
        assert_eq!(res.status(), 404);
        let body: serde_json::Value = serde_json::from_slice(res.body()).unwrap();
        assert_eq!(body["error"]["code"], "not_found");
    }
}
