//! The events websocket.
use warp::filters::BoxedFilter;
use warp::Filter;

use super::extract::*;
use crate::context::Ctx;
use crate::handlers::Response;
use warp::Reply;

use crate::auth::Caller;
use crate::handlers::events;

/// The routes.
pub fn routes(ctx: Ctx) -> BoxedFilter<(Response,)> {
    let c = || with_ctx(ctx.clone());
    let events = warp::path!("events")
        .and(warp::get())
        .and(c())
        .and(ws_caller(ctx.clone()))
        .and(warp::query::<events::EventsQuery>())
        .and(warp::ws())
        .map(
            |ctx: Ctx, caller: Caller, query: events::EventsQuery, ws: warp::ws::Ws| {
                ws.on_upgrade(move |socket| events::serve(ctx, caller, query, socket))
                    .into_response()
            },
        );
    events.boxed()
}
