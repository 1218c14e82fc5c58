//! Parallel fan-out under one request deadline, with required and optional parts.
//!
//! A required part that fails ends the fan-out at once with its error (502, or 504 for a timeout),
//! and the parts still in flight are dropped, which cancels their calls. An optional part that
//! fails, or is still running at the deadline, yields `None` and is recorded as degraded
//! (`X-Bff-Degraded` and a log line). Every call gets what is left of the deadline.
//!
//! # Example
//! ```no_run
//! # use bff_core::{Ctx, BffError, Upstream};
//! # #[derive(serde::Deserialize)] struct Profile { name: String }
//! # #[derive(serde::Deserialize)] struct Unread { count: u32 }
//! # async fn home(ctx: Ctx, users: Upstream, notifications: Upstream) -> Result<(), BffError> {
//! let (profile, unread) = ctx
//!     .fanout((
//!         users.get::<Profile>("/users/42").required(),
//!         notifications.get::<Unread>("/unread-count/42").optional(),
//!     ))
//!     .await?;
//! let badge: Option<u32> = unread.map(|u| u.count);
//! # Ok(()) }
//! ```

use std::future::Future;

use futures::{StreamExt, TryStreamExt, stream};

use crate::error::BffError;
use crate::observe::spans::PartSpan;
use crate::request::Ctx;
use crate::upstream::{Call, Decode, Upstream, UpstreamError};

/// One part of a fan-out.
pub trait Part: Send {
    /// What the part yields: `T` for a required part, `Option<T>` for an optional one.
    type Output: Send;

    /// Runs the part under `ctx`.
    fn run(self, ctx: &Ctx) -> impl Future<Output = Result<Self::Output, BffError>> + Send;
}

/// A part whose failure fails the request.
#[derive(Debug)]
pub struct Required<T>(Call<T>);

/// A part whose failure degrades the answer instead of failing it.
#[derive(Debug)]
pub struct Optional<T> {
    call: Call<T>,
    label: Option<String>,
}

impl<T: Decode> Call<T> {
    /// This call must succeed for the request to succeed.
    pub fn required(self) -> Required<T> {
        Required(self)
    }

    /// This call may fail; it then yields `None` and is reported under the upstream's name.
    pub fn optional(self) -> Optional<T> {
        Optional { call: self, label: None }
    }

    /// Like [`Call::optional`], reported under `label` (e.g. `catalog:SKU-0001`).
    pub fn optional_as(self, label: impl Into<String>) -> Optional<T> {
        Optional { call: self, label: Some(label.into()) }
    }
}

impl<T: Decode> Part for Required<T> {
    type Output = T;

    async fn run(self, ctx: &Ctx) -> Result<T, BffError> {
        let (sending, part) = start(self.0, ctx, None, true);
        let result = sending.await;
        if let Some(mut part) = part {
            part.end(result.as_ref().err().map(|e| e.code()));
        }
        result.map_err(BffError::from)
    }
}

impl<T: Decode> Part for Optional<T> {
    type Output = Option<T>;

    async fn run(self, ctx: &Ctx) -> Result<Option<T>, BffError> {
        let (sending, part, upstream, label) = self.start(ctx);
        let result = sending.await;
        if let Some(mut part) = part {
            part.end(result.as_ref().err().map(|e| e.code()));
        }
        match result {
            Ok(value) => Ok(Some(value)),
            Err(error) => {
                tracing::warn!(
                    upstream = error.service(),
                    code = error.code(),
                    error = %error,
                    cause = error.cause().unwrap_or(""),
                    "optional part degraded"
                );
                upstream.count_degraded();
                ctx.degrade(label.unwrap_or_else(|| error.service().to_owned()));
                Ok(None)
            }
        }
    }
}

/// Sends a part's `call`, with its span when the request's spans are exported (named `label`, or
/// the upstream's name). Not in the parts' `async fn`s: a local borrowed there stays in their
/// futures (a part's `Call` among them), and a fan-out's future holds every part's.
fn start<T: Decode>(
    call: Call<T>,
    ctx: &Ctx,
    label: Option<&str>,
    required: bool,
) -> (impl Future<Output = Result<T, UpstreamError>> + Send + 'static + use<T>, Option<Box<PartSpan>>) {
    let label = || label.unwrap_or(call.upstream().name()).to_owned();
    let (context, part) = ctx.part(label, required);
    // Made now: the part awaits it at once.
    (call.send_now(context), part)
}

impl<T: Decode> Optional<T> {
    /// [`start`]s the call, keeping its upstream (where a degradation is counted) and label.
    fn start(
        self,
        ctx: &Ctx,
    ) -> (
        impl Future<Output = Result<T, UpstreamError>> + Send + 'static,
        Option<Box<PartSpan>>,
        Upstream,
        Option<String>,
    ) {
        let Optional { call, label } = self;
        let upstream = call.upstream().clone();
        let (sending, part) = start(call, ctx, label.as_deref(), false);
        (sending, part, upstream, label)
    }
}

/// A set of parts run together: implemented for tuples of up to eight [`Part`]s.
pub trait Fanout {
    /// A tuple of the parts' outputs, in order.
    type Output;

    /// Runs every part concurrently; the first required failure ends it.
    fn run(self, ctx: &Ctx) -> impl Future<Output = Result<Self::Output, BffError>> + Send;
}

macro_rules! tuple_fanout {
    ($($part:ident),+) => {
        impl<$($part: Part),+> Fanout for ($($part,)+) {
            type Output = ($($part::Output,)+);

            #[allow(non_snake_case)]
            async fn run(self, ctx: &Ctx) -> Result<Self::Output, BffError> {
                let ($($part,)+) = self;
                futures::try_join!($($part.run(ctx)),+)
            }
        }
    };
}

tuple_fanout!(A);
tuple_fanout!(A, B);
tuple_fanout!(A, B, C);
tuple_fanout!(A, B, C, D);
tuple_fanout!(A, B, C, D, E);
tuple_fanout!(A, B, C, D, E, F);
tuple_fanout!(A, B, C, D, E, F, G);
tuple_fanout!(A, B, C, D, E, F, G, H);

/// Many parts of one kind as one part: see [`each`].
#[derive(Debug)]
pub struct Each<P>(Vec<P>);

/// Runs many parts of one kind as one part of a larger fan-out, at most [`Ctx::concurrency`] at
/// once, keeping their order: `ctx.fanout((batch.required(), each(per_item_parts)))`.
pub fn each<P: Part>(parts: impl IntoIterator<Item = P>) -> Each<P> {
    Each(parts.into_iter().collect())
}

impl<P: Part> Part for Each<P> {
    type Output = Vec<P::Output>;

    async fn run(self, ctx: &Ctx) -> Result<Vec<P::Output>, BffError> {
        stream::iter(self.0).map(|part| part.run(ctx)).buffered(ctx.concurrency()).try_collect().await
    }
}

// === impl Ctx ===

impl Ctx {
    /// Runs a tuple of parts in parallel under this request's deadline.
    pub async fn fanout<F: Fanout>(&self, parts: F) -> Result<F::Output, BffError> {
        parts.run(self).await
    }

    /// Runs one required call.
    pub async fn fetch<T: Decode>(&self, call: Call<T>) -> Result<T, BffError> {
        call.required().run(self).await
    }

    /// Runs many parts of one kind, at most [`Ctx::concurrency`] at once, keeping their order.
    ///
    /// With optional parts, the failed ones come back as `None` and are each reported.
    pub async fn fanout_all<P: Part>(&self, parts: impl IntoIterator<Item = P>) -> Result<Vec<P::Output>, BffError> {
        stream::iter(parts).map(|part| part.run(self)).buffered(self.concurrency()).try_collect().await
    }
}

#[cfg(test)]
mod tests;
