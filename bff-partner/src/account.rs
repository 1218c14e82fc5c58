//! A partner reads only its own account's data: another account's users and orders do not exist
//! for it (404, the same answer as for a user or order that does not exist at all, so a partner
//! cannot probe which ids are taken).

use bff_core::{ApiClient, BffError, Call, Ctx, encode};
use serde::Deserialize;

use crate::{Upstreams, records};

/// The part of a user record this check reads.
#[derive(Debug, Deserialize)]
pub(crate) struct Owner {
    account: String,
}

/// The call reading the account of `user`.
pub(crate) fn of_user(up: &Upstreams, user: &str) -> Call<Owner> {
    up.users.get(format!("/users/{}", encode(user)))
}

/// `Ok` when `owner` is `client`'s account; otherwise the 404 `not_found` makes.
pub(crate) fn ensure(client: &ApiClient, owner: &Owner, not_found: impl FnOnce() -> String) -> Result<(), BffError> {
    if owner.account == *client.account { Ok(()) } else { Err(BffError::NotFound(not_found())) }
}

/// The order `id`, when it belongs to `client`'s account: what `GET /v{n}/orders/{id}` of every
/// version reads, each projecting it into its own shape. Another account's order, or one that
/// does not exist, is the same 404.
pub(crate) async fn owned_order(
    ctx: &Ctx,
    client: &ApiClient,
    up: &Upstreams,
    id: &str,
) -> Result<records::Order, BffError> {
    let not_found = || format!("no order `{id}`");
    let record = ctx
        .fetch(up.orders.get::<records::Order>(format!("/orders/{}", encode(id))))
        .await
        .map_err(|e| e.when_not_found(not_found()))?;
    let owner = ctx.fetch(of_user(up, &record.user_id.to_string())).await.map_err(|e| e.when_not_found(not_found()))?;
    ensure(client, &owner, not_found)?;
    Ok(record)
}
