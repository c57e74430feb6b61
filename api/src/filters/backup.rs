//! `GET /backup` (admin).
use warp::filters::BoxedFilter;
use warp::Filter;

use super::extract::*;
use super::respond_fut;
use crate::context::Ctx;
use crate::handlers::{self, Response};

/// The route.
pub fn routes(ctx: Ctx) -> BoxedFilter<(Response,)> {
    warp::path!("backup")
        .and(warp::get())
        .and(user(ctx))
        .and_then(|ctx, caller| respond_fut(handlers::backup::get(ctx, caller)))
        .boxed()
}
