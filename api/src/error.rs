//! API errors: one typed error, turned into the JSON error body of docs/contracts.md
//! in one place ([`recover`]), for our own errors and warp's rejections alike.
//!
//! `{"error": {"code": "not_found", "message": "...", "field": null}}`

use std::convert::Infallible;

use lb_model::ValidationError;
use warp::http::StatusCode;
use warp::Reply;

/// An error answered to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Machine-readable code (`not_found`, `invalid`, `conflict`, ...).
    pub code: &'static str,
    /// Human-readable message, naming the input.
    pub message: String,
    /// The field at fault, when there is one.
    pub field: Option<String>,
    /// Seconds to wait before retrying (429).
    pub retry_after: Option<u64>,
}

impl warp::reject::Reject for ApiError {}

/// Result with [`ApiError`].
pub type Result<T, E = ApiError> = std::result::Result<T, E>;

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
            retry_after: None,
        }
    }

    /// 400: invalid input in `field`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: Some(field.into()),
            ..Self::new(StatusCode::BAD_REQUEST, "invalid", message)
        }
    }

    /// 400: a body that is not what the route takes.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 401: no valid credentials.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 403: valid credentials that may not do this.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 409: a name taken or a stale revision.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// 422: well-formed input that cannot be applied now.
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "unprocessable", message)
    }

    /// 413: a body over the limit.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message)
    }

    /// 429 with `Retry-After`.
    pub fn too_many(message: impl Into<String>, retry_after: u64) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "too_many_requests", message)
        }
    }

    /// 503: the store cannot be reached.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    /// 500: a fault of ours, never of the input. The cause is logged, not
    /// shown.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error (logged on the server)",
        )
    }

    /// The same error with a field.
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// The error body: `{"error": {"code", "message", "field"}}`.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({"error": {
            "code": self.code,
            "message": self.message,
            "field": self.field,
        }})
    }

    /// The reply carrying this error.
    pub fn into_reply(self) -> warp::reply::Response {
        let mut reply =
            warp::reply::with_status(warp::reply::json(&self.body()), self.status).into_response();
        if let Some(secs) = self.retry_after {
            reply.headers_mut().insert("retry-after", secs.into());
        }
        reply
    }
}

impl From<ValidationError> for ApiError {
    fn from(err: ValidationError) -> Self {
        ApiError::invalid(err.field, err.message)
    }
}

impl From<lb_store::Error> for ApiError {
    fn from(err: lb_store::Error) -> Self {
        match err {
            lb_store::Error::Unavailable(m) => {
                ApiError::unavailable(format!("store unavailable: {m}"))
            }
            other => ApiError::internal(other),
        }
    }
}

/// Turns every rejection into the JSON error body.
pub async fn recover(rejection: warp::Rejection) -> Result<warp::reply::Response, Infallible> {
    Ok(rejection_to_error(&rejection).into_reply())
}

/// The [`ApiError`] for a rejection.
pub fn rejection_to_error(rejection: &warp::Rejection) -> ApiError {
    use warp::reject;
    if let Some(err) = rejection.find::<ApiError>() {
        return err.clone();
    }
    if rejection.is_not_found() {
        return ApiError::not_found("no such route");
    }
    if let Some(err) = rejection.find::<reject::PayloadTooLarge>() {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("request body too large: {err}"),
        );
    }
    if rejection.find::<reject::LengthRequired>().is_some() {
        return ApiError::new(
            StatusCode::LENGTH_REQUIRED,
            "length_required",
            "a Content-Length header is required",
        );
    }
    if let Some(err) = rejection.find::<reject::UnsupportedMediaType>() {
        return ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            err.to_string(),
        );
    }
    if let Some(err) = rejection.find::<reject::InvalidQuery>() {
        return ApiError::bad_request(format!("invalid query string: {err}"));
    }
    if let Some(err) = rejection.find::<reject::MissingHeader>() {
        return ApiError::bad_request(err.to_string());
    }
    if let Some(err) = rejection.find::<reject::InvalidHeader>() {
        return ApiError::bad_request(err.to_string());
    }
    if let Some(err) = rejection.find::<warp::body::BodyDeserializeError>() {
        return ApiError::bad_request(format!("invalid body: {err}"));
    }
    if rejection.find::<reject::MethodNotAllowed>().is_some() {
        return ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "method not allowed on this route",
        );
    }
    ApiError::bad_request(format!("bad request: {rejection:?}"))
}
