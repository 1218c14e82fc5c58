//! Which route pattern a `routes."<pattern>"` key of a config names, asked without running a
//! handler: a table of the declared patterns matched as the router matches them, so a typo stops
//! the process instead of silently leaving a route on the default deadline.

/// The declared route patterns, matched as axum's router matches them (both are `matchit`).
pub(crate) struct Patterns(matchit::Router<String>);

impl Patterns {
    /// A table of `patterns` (each once).
    pub(crate) fn new<'a>(patterns: impl IntoIterator<Item = &'a str>) -> Self {
        let mut table = matchit::Router::new();
        for pattern in patterns {
            // The router took these patterns already: a repeat or a conflict is a route declared
            // twice, for other methods.
            let _ = table.insert(pattern, pattern.to_owned());
        }
        Self(table)
    }

    /// The pattern `key` (itself a pattern, its `{param}`s taken literally) resolves to.
    pub(crate) fn matched(&self, key: &str) -> Option<&str> {
        let path = key.replace('{', "%7B").replace('}', "%7D");
        self.0.at(&path).ok().map(|found| found.value.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_resolve_to_their_own_pattern_or_to_nothing() {
        let patterns = Patterns::new(["/mobile/home", "/mobile/orders/{id}", "/mobile/orders", "/files/{*rest}"]);
        let matched = |key: &str| patterns.matched(key);
        assert_eq!(matched("/mobile/home"), Some("/mobile/home"));
        assert_eq!(matched("/mobile/orders/{id}"), Some("/mobile/orders/{id}"));
        assert_eq!(matched("/mobile/orders"), Some("/mobile/orders"));
        assert_eq!(matched("/files/{*rest}"), Some("/files/{*rest}"));
        // A differently named parameter takes the route, but is not its pattern.
        assert_eq!(matched("/mobile/orders/{order}"), Some("/mobile/orders/{id}"));
        assert_eq!(matched("/mobile/hom"), None);
        assert_eq!(matched("/"), None);
    }
}
