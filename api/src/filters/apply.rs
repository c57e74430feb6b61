//! `PUT /projects/{p}/apply`: a whole project from one document (the body
//! as read, within the body limit, parsed by the handler by its
//! `Content-Type`).
use warp::filters::BoxedFilter;
use warp::Filter;

use super::extract::*;
use super::respond_fut;
use crate::context::Ctx;
use crate::handlers::apply::{self, ApplyQuery};
use crate::handlers::Response;

/// The route.
pub fn routes(ctx: Ctx) -> BoxedFilter<(Response,)> {
    warp::path!("projects" / String / "apply")
        .and(warp::put())
        .and(user(ctx))
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(warp::header::optional::<String>("content-type"))
        .and(warp::header::optional::<u64>("content-length"))
        .and(warp::body::stream())
        .and_then(
            |p: String, ctx: Ctx, caller, raw: String, content_type, declared, stream| {
                respond_fut(async move {
                    let query = ApplyQuery::parse(&raw)?;
                    let body = read_limited(declared, stream).await?;
                    apply::apply(ctx, caller, p, query, content_type, body).await
                })
            },
        )
        .boxed()
}
