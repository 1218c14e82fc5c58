//! `POST /web/notifications/read`: marks every notification of the caller read.

use axum::Json;
use axum::extract::State;
use bff_core::{BffError, Ctx, Identity, encode};
use serde::{Deserialize, Serialize};

use crate::Upstreams;

/// The answer: what the badge shows now.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Unread {
    /// Unread notifications left (0 once all are read).
    pub unread: u64,
}

#[derive(Deserialize)]
struct Count {
    count: u64,
}

pub(crate) async fn notifications_read(
    ctx: Ctx,
    user: Identity,
    State(up): State<Upstreams>,
) -> Result<Json<Unread>, BffError> {
    let path = format!("/notifications/{}/read", encode(user.subject()));
    let left = ctx.fetch(up.notifications.post::<Count>(path)).await?;
    Ok(Json(Unread { unread: left.count }))
}
