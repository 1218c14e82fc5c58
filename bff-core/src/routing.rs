//! A route's handlers by method, as axum's [`get`](axum::routing::get) and friends build them,
//! and which methods they are: the gateway answers CORS preflights and `405`s from that list
//! without asking the handlers.
//!
//! ```
//! use bff_core::routing::{get, post};
//! use bff_core::{Access, Routes};
//! # async fn list() {} async fn create() {}
//! let routes: Routes = Routes::new().route("/orders", get(list).post(create), Access::scope("orders"));
//! ```

use std::convert::Infallible;

use axum::handler::Handler;
use axum::http::Method;
use axum::routing::MethodRouter;

/// The handlers of one route, by method, for [`Routes::route`](crate::Routes::route): built by
/// [`get`], [`post`], [`put`], [`patch`] and [`delete`], and chained as axum's are
/// (`get(list).post(create)`). A `GET` handler also answers `HEAD`.
#[must_use = "handlers do nothing until given to `Routes::route`"]
pub struct Handlers<S = ()> {
    pub(crate) router: MethodRouter<S, Infallible>,
    pub(crate) methods: Vec<Method>,
}

impl<S> Clone for Handlers<S> {
    fn clone(&self) -> Self {
        Self { router: self.router.clone(), methods: self.methods.clone() }
    }
}

impl<S> std::fmt::Debug for Handlers<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handlers").field("methods", &self.methods).finish_non_exhaustive()
    }
}

macro_rules! methods {
    ($($name:ident => $method:ident $(+ $also:ident)?),* $(,)?) => {
        $(
            #[doc = concat!("Handlers with `handler` for `", stringify!($method), "`",
                $(" (and `", stringify!($also), "`)",)? ".")]
            pub fn $name<H, T, S>(handler: H) -> Handlers<S>
            where
                H: Handler<T, S>,
                T: 'static,
                S: Clone + Send + Sync + 'static,
            {
                Handlers { router: MethodRouter::new(), methods: Vec::new() }.$name(handler)
            }
        )*

        impl<S: Clone + Send + Sync + 'static> Handlers<S> {
            $(
                #[doc = concat!("Adds `handler` for `", stringify!($method), "`",
                    $(" (and `", stringify!($also), "`)",)? ".")]
                pub fn $name<H, T>(mut self, handler: H) -> Self
                where
                    H: Handler<T, S>,
                    T: 'static,
                {
                    self.router = self.router.$name(handler);
                    for method in [Method::$method $(, Method::$also)?] {
                        if !self.methods.contains(&method) {
                            self.methods.push(method);
                        }
                    }
                    self
                }
            )*
        }
    };
}

methods! {
    get => GET + HEAD,
    post => POST,
    put => PUT,
    patch => PATCH,
    delete => DELETE,
}

impl<S: Clone + Send + Sync + 'static> Handlers<S> {
    /// Provides the handlers' state (as [`MethodRouter::with_state`]).
    pub fn with_state<S2>(self, state: S) -> Handlers<S2> {
        Handlers { router: self.router.with_state(state), methods: self.methods }
    }

    /// The methods answered, in the order they were added (`HEAD` right after `GET`).
    pub fn methods(&self) -> &[Method] {
        &self.methods
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_methods_are_those_given_each_once_with_head_for_get() {
        async fn handler() {}
        let methods = |handlers: Handlers| handlers.methods;
        assert_eq!(methods(get(handler)), [Method::GET, Method::HEAD]);
        assert_eq!(methods(post(handler).delete(handler)), [Method::POST, Method::DELETE]);
        assert_eq!(
            methods(put(handler).patch(handler).get(handler)),
            [Method::PUT, Method::PATCH, Method::GET, Method::HEAD]
        );
    }
}
