//! A partner reads only its own account's data: another account's users and orders do not exist
//! for it (404, the same answer as for a user or order that does not exist at all, so a partner
//! cannot probe which ids are taken).

use bff_core::{ApiClient, BffError, Call, encode};
use serde::Deserialize;

use crate::Upstreams;

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
