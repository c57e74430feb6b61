//! The API client: JSON requests with the bearer token, the API's error body
//! turned into an [`Error`] of the right class, and websocket connects.

use std::time::Duration;

use lb_model::views::{ErrorBody, ErrorDetail};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::WebSocketStream;

use crate::error::{Error, Kind, Result};

/// A connection a websocket runs on: TCP, or TLS over TCP.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A websocket to the API.
pub type Socket = WebSocketStream<Box<dyn Io>>;

/// Talks to one API.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    /// Base URL without `/api/v1`.
    api: String,
    token: Option<String>,
}

/// What [`segment`] leaves as it is: the unreserved characters of RFC 3986.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes one path segment or query value (names and ids never
/// need it, but input is input).
pub fn segment(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

/// An API object as its typed view. Commands keep the JSON they got for
/// `-o json|yaml` (shown as the API sent it) and read the view for tables.
pub fn typed<T: DeserializeOwned>(value: &Value) -> Result<T> {
    T::deserialize(value)
        .map_err(|e| Error::server(format!("the API answered something lbc cannot read: {e}")))
}

impl Client {
    /// A client of `api` (already normalised), with a token or none.
    pub fn new(api: &str, token: Option<String>) -> Result<Self> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("lbc/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| Error::server(format!("cannot set up HTTP: {e}")))?;
        Ok(Self {
            http,
            api: api.to_owned(),
            token,
        })
    }

    /// The API's base URL.
    pub fn api(&self) -> &str {
        &self.api
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.api)
    }

    fn require_token(&self) -> Result<&str> {
        self.token
            .as_deref()
            .ok_or_else(|| Error::auth("not logged in: run `lbc login` (or set LB_TOKEN)"))
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        auth: bool,
    ) -> Result<reqwest::Response> {
        self.send_with(self.http.request(method, self.url(path)), body, auth)
            .await
    }

    async fn send_with(
        &self,
        mut request: reqwest::RequestBuilder,
        body: Option<&Value>,
        auth: bool,
    ) -> Result<reqwest::Response> {
        if auth {
            request = request.bearer_auth(self.require_token()?);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| self.unreachable(e))?;
        if response.status().is_success() {
            return Ok(response);
        }
        Err(error_of(response).await)
    }

    fn unreachable(&self, e: reqwest::Error) -> Error {
        let mut cause = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            cause = s.to_string();
            source = s.source();
        }
        Error::server(format!("cannot reach the API at {}: {cause}", self.api))
    }

    /// A JSON request with the token; `Value::Null` for an empty answer.
    pub async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value> {
        let response = self.send(method, path, body, true).await?;
        read_json(response).await
    }

    /// A JSON request with the token that only applies to `revision` of the
    /// resource (`If-Match`): a concurrent change answers a conflict
    /// ([`Kind::Conflict`]) instead of being overwritten.
    pub async fn call_if_match(
        &self,
        method: Method,
        path: &str,
        body: &Value,
        revision: i64,
    ) -> Result<Value> {
        let request = self
            .http
            .request(method, self.url(path))
            .header("if-match", format!("\"{revision}\""));
        let response = self.send_with(request, Some(body), true).await?;
        read_json(response).await
    }

    /// A JSON request without credentials (signup, login).
    pub async fn call_public(&self, method: Method, path: &str, body: &Value) -> Result<Value> {
        let response = self.send(method, path, Some(body), false).await?;
        read_json(response).await
    }

    /// `GET` with the token.
    pub async fn get(&self, path: &str) -> Result<Value> {
        self.call(Method::GET, path, None).await
    }

    /// `POST` with the token.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value> {
        self.call(Method::POST, path, Some(body)).await
    }

    /// `GET` of a text answer.
    pub async fn get_text(&self, path: &str) -> Result<String> {
        let response = self.send(Method::GET, path, None, true).await?;
        response
            .text()
            .await
            .map_err(|e| Error::server(format!("reading the answer: {e}")))
    }

    /// `GET` of a text answer, with the answer's headers.
    pub async fn get_text_headers(
        &self,
        path: &str,
    ) -> Result<(String, reqwest::header::HeaderMap)> {
        let response = self.send(Method::GET, path, None, true).await?;
        let headers = response.headers().clone();
        let text = response
            .text()
            .await
            .map_err(|e| Error::server(format!("reading the answer: {e}")))?;
        Ok((text, headers))
    }

    /// Opens a websocket to `path` (with its query) with the token.
    pub async fn websocket(&self, path: &str) -> Result<Socket> {
        let token = self.require_token()?;
        let url = websocket_url(&self.url(path))?;
        let mut request = url
            .as_str()
            .into_client_request()
            .map_err(|e| Error::usage(format!("bad websocket URL {url:?}: {e}")))?;
        let value = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| Error::auth("the token holds characters a header cannot carry"))?;
        request.headers_mut().insert("authorization", value);
        let stream = self.connect(&url).await?;
        match tokio_tungstenite::client_async(request, stream).await {
            Ok((socket, _)) => Ok(socket),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                let status = response.status().as_u16();
                let body = response.body().clone().unwrap_or_default();
                Err(error_from_body(status, &body))
            }
            Err(e) => Err(Error::server(format!(
                "cannot open a websocket to {}: {e}",
                self.api
            ))),
        }
    }

    /// TCP to the URL's host, with TLS (webpki roots) for `wss://`.
    async fn connect(&self, url: &str) -> Result<Box<dyn Io>> {
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| Error::usage(format!("bad websocket URL {url:?}: {e}")))?;
        let tls = parsed.scheme() == "wss";
        let host = parsed
            .host_str()
            .ok_or_else(|| Error::usage(format!("no host in {url:?}")))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = parsed.port().unwrap_or(if tls { 443 } else { 80 });
        let unreachable =
            |e: std::io::Error| Error::server(format!("cannot reach the API at {}: {e}", self.api));
        let tcp = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::net::TcpStream::connect((host.as_str(), port)),
        )
        .await
        .map_err(|_| Error::server(format!("cannot reach the API at {}: timed out", self.api)))?
        .map_err(unreachable)?;
        let _ = tcp.set_nodelay(true);
        if !tls {
            return Ok(Box::new(tcp));
        }
        use tokio_rustls::rustls;
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::server(format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from(host.clone())
            .map_err(|e| Error::usage(format!("bad host name {host:?}: {e}")))?;
        let stream = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(unreachable)?;
        Ok(Box::new(stream))
    }
}

async fn read_json(response: reqwest::Response) -> Result<Value> {
    if response.status() == StatusCode::NO_CONTENT {
        return Ok(Value::Null);
    }
    let bytes = response
        .bytes()
        .await
        .map_err(|e| Error::server(format!("reading the answer: {e}")))?;
    if bytes.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::server(format!("the API answered something that is not JSON: {e}")))
}

async fn error_of(response: reqwest::Response) -> Error {
    let status = response.status().as_u16();
    let body = response.bytes().await.unwrap_or_default();
    error_from_body(status, &body)
}

/// The `ws://` or `wss://` URL of an `http://` or `https://` one.
fn websocket_url(url: &str) -> Result<String> {
    let bad = |why: String| Error::usage(format!("bad websocket URL {url:?}: {why}"));
    let mut parsed = Url::parse(url).map_err(|e| bad(e.to_string()))?;
    let scheme = if parsed.scheme() == "https" {
        "wss"
    } else {
        "ws"
    };
    parsed
        .set_scheme(scheme)
        .map_err(|()| bad(format!("cannot switch to {scheme}")))?;
    Ok(parsed.into())
}

/// The error of an API answer: its `{"error": {"message", "field"}}`, or the
/// status when the body is not that.
pub fn error_from_body(status: u16, body: &[u8]) -> Error {
    let kind = Error::kind_of_status(status);
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(body) => error_of_detail(kind, &body.error),
        Err(_) => {
            let reason = StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("error");
            Error::new(kind, format!("the API answered {status} {reason}"))
        }
    }
}

/// The error of an `{"code", "message", "field"}` object.
pub fn error_of_detail(kind: Kind, error: &ErrorDetail) -> Error {
    let message = if error.message.is_empty() {
        "unknown error"
    } else {
        error.message.as_str()
    };
    let message = match &error.field {
        Some(field) if !message.contains(field.as_str()) => format!("{field}: {message}"),
        _ => message.to_owned(),
    };
    Error::new(kind, one_line(&message))
}

/// The error of a websocket's last frame `{"error": {"code", ...}}`.
pub fn error_of_control(error: &ErrorDetail) -> Error {
    let kind = match error.code.as_str() {
        "not_found" => Kind::NotFound,
        "unauthorized" | "forbidden" => Kind::Auth,
        "invalid" | "bad_request" => Kind::Usage,
        "conflict" | "unprocessable" => Kind::Conflict,
        _ => Kind::Server,
    };
    error_of_detail(kind, error)
}

/// Keeps a message on one line.
pub fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_from_bodies() {
        let body =
            br#"{"error":{"code":"invalid","message":"3 MiB is out of range","field":"memory"}}"#;
        let e = error_from_body(400, body);
        assert_eq!(e.exit_code(), crate::error::code::USAGE);
        assert_eq!(e.to_string(), "memory: 3 MiB is out of range");
        let e = error_from_body(502, b"<html>bad gateway</html>");
        assert_eq!(e.exit_code(), crate::error::code::SERVER);
        assert_eq!(e.to_string(), "the API answered 502 Bad Gateway");
        assert_eq!(error_from_body(404, b"{}").exit_code(), 3);
        assert_eq!(error_from_body(409, b"{}").exit_code(), 4);
        assert_eq!(error_from_body(401, b"{}").exit_code(), 5);
    }

    #[test]
    fn segments() {
        assert_eq!(segment("web"), "web");
        assert_eq!(segment("a b/c"), "a%20b%2Fc");
        assert_eq!(segment("A-z._~é"), "A-z._~%C3%A9");
    }

    #[test]
    fn websocket_urls() {
        let ws = |url: &str| websocket_url(url).unwrap();
        assert_eq!(ws("http://h:8080/api/v1/x?a=1"), "ws://h:8080/api/v1/x?a=1");
        assert_eq!(ws("https://h/api/v1/x"), "wss://h/api/v1/x");
    }
}
