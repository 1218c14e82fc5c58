//! `bff-web`: the web app's BFF. Rich payloads for desktop pages, CORS for the app's origins, browser
//! sessions (`[session]`), and the web app itself at `/`.

mod home;
mod notifications;
mod product;
pub mod records;

use bff_core::assets::Assets;
use bff_core::routing::{get, post};
use bff_core::{Access, App, ConfigError, Gateway, Routes};

pub use home::{Home, LATEST};
pub use notifications::Unread;
pub use product::{ProductPage, REVIEWS_PAGE};

bff_core::upstreams! {
    /// The upstreams this BFF calls, resolved once at start-up.
    pub struct Upstreams { users, orders, notifications, catalog, inventory, reviews }
}

/// The web BFF's routes, wrapped by the gateway's layers.
pub fn app(gateway: &Gateway) -> Result<App, ConfigError> {
    let routes = Routes::new()
        .route("/web/home", get(home::home), Access::scope("profile"))
        .route("/web/products/{sku}", get(product::product_page), Access::authenticated())
        .route("/web/notifications/read", post(notifications::notifications_read), Access::scope("profile"))
        .with_state(Upstreams::from_gateway(gateway)?)
        .merge(page());
    gateway.router(routes)
}

/// The web app (`static/`): one page and one ES module, signed in through the BFF's session.
fn page() -> Routes {
    Assets::new()
        .file("/", "text/html; charset=utf-8", include_bytes!("../static/index.html"))
        .file("/app.js", "text/javascript; charset=utf-8", include_bytes!("../static/app.js"))
        .file("/app.css", "text/css; charset=utf-8", include_bytes!("../static/app.css"))
        .routes()
}
