//! A passthrough route's path: a pattern (`/files/{id}`, `/api/{*rest}`) or a prefix
//! (`/legacy/*`), matched against a request's raw path, and its rewrite into the upstream path.
//!
//! Matching is on the raw (still percent-encoded) path, so what a parameter captures goes
//! upstream exactly as the client wrote it: nothing decoded here can turn into a `/`.

use std::fmt;

use smallvec::SmallVec;

/// One segment of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    /// Itself, byte for byte.
    Literal(String),
    /// Any one non-empty segment, captured under the name.
    Param(String),
    /// One or more segments to the end, captured under the name.
    CatchAll(String),
}

/// A parsed route path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pattern {
    /// As written in the config.
    source: String,
    segments: Vec<Segment>,
    /// `/x/*`: `/x` itself and anything under it.
    prefix: bool,
}

/// What a matched path captured: each parameter's raw text (a route has few: held inline).
pub(crate) type Captures<'a> = SmallVec<[(&'a str, &'a str); 4]>;

/// The name under which a prefix route's remainder is captured.
const PREFIX_REST: &str = "__proxy_rest";

impl Pattern {
    /// Parses `path`, or says what is wrong with it.
    pub(crate) fn parse(path: &str) -> Result<Self, String> {
        let Some(rest) = path.strip_prefix('/') else {
            return Err("a path starts with `/`".to_owned());
        };
        let (rest, prefix) = match rest.strip_suffix('*') {
            Some(base) if base.is_empty() || base.ends_with('/') => (base.trim_end_matches('/'), true),
            Some(_) => return Err("a prefix ends in `/*` (`/legacy/*`)".to_owned()),
            None => (rest, false),
        };
        let mut segments = Vec::new();
        let pieces: Vec<&str> = if rest.is_empty() { Vec::new() } else { rest.split('/').collect() };
        let last = pieces.len().saturating_sub(1);
        for (i, piece) in pieces.iter().enumerate() {
            if piece.is_empty() {
                return Err("a path has no empty segment (`//`, or a `/` at the end)".to_owned());
            }
            let segment = match piece.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                Some(name) => match name.strip_prefix('*') {
                    Some(name) if i == last && !prefix => Segment::CatchAll(param_name(name)?),
                    Some(_) => return Err("a `{*name}` parameter is the last segment".to_owned()),
                    None => Segment::Param(param_name(name)?),
                },
                None if piece.contains(['{', '}']) => {
                    return Err(format!("`{piece}`: a parameter takes a whole segment (`{{name}}`)"));
                }
                None if piece.contains(['*', '?', '#', '%', '\\']) => {
                    return Err(format!("`{piece}`: a literal segment has no `*`, `?`, `#`, `%` or `\\`"));
                }
                None if *piece == "." || *piece == ".." => return Err("a path has no `.` or `..` segment".to_owned()),
                None => Segment::Literal((*piece).to_owned()),
            };
            segments.push(segment);
        }
        let pattern = Self { source: path.to_owned(), segments, prefix };
        if let Some(name) = pattern.duplicate_param() {
            return Err(format!("the parameter `{name}` is named twice"));
        }
        Ok(pattern)
    }

    fn duplicate_param(&self) -> Option<&str> {
        let names: Vec<&str> = self.params().collect();
        names.iter().enumerate().find(|(i, n)| names[..*i].contains(n)).map(|(_, n)| *n)
    }

    /// The names of its parameters.
    pub(crate) fn params(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Param(name) | Segment::CatchAll(name) => Some(name.as_str()),
            Segment::Literal(_) => None,
        })
    }

    /// The patterns the router gets for it: itself, or for a prefix its base and everything under,
    /// each parameter named for its place (`/files/{p1}`), so that routes naming theirs apart
    /// share the router's nodes.
    pub(crate) fn router_patterns(&self) -> Vec<String> {
        if !self.prefix {
            return vec![self.router_text(&self.segments)];
        }
        let base = self.router_text(&self.segments);
        let under = format!("{}/{{*{PREFIX_REST}}}", base.trim_end_matches('/'));
        vec![base, under]
    }

    fn router_text(&self, segments: &[Segment]) -> String {
        let mut text = String::new();
        for (i, segment) in segments.iter().enumerate() {
            text.push('/');
            match segment {
                Segment::Literal(l) => text.push_str(l),
                Segment::Param(_) => text.push_str(&format!("{{p{i}}}")),
                Segment::CatchAll(_) => text.push_str(&format!("{{*p{i}}}")),
            }
        }
        if text.is_empty() { "/".to_owned() } else { text }
    }

    /// Whether it takes any number of segments (a prefix, or a `{*rest}` at its end): such routes
    /// are tried after those of fixed length.
    pub(crate) fn is_catch_all(&self) -> bool {
        self.prefix || matches!(self.segments.last(), Some(Segment::CatchAll(_)))
    }

    /// Its shape: the pattern with every parameter unnamed (`/files/{}`). Two patterns of one
    /// shape take the same paths.
    pub(crate) fn shape(&self) -> String {
        let mut shape = String::new();
        for segment in &self.segments {
            shape.push('/');
            match segment {
                Segment::Literal(l) => shape.push_str(l),
                Segment::Param(_) => shape.push_str("{}"),
                Segment::CatchAll(_) => shape.push_str("{*}"),
            }
        }
        if self.prefix {
            shape.push_str("/*");
        }
        if shape.is_empty() { "/".to_owned() } else { shape }
    }

    /// Its root: the literal segments before its first parameter (`/api/catalog` for
    /// `/api/catalog/{*rest}`, the base of a prefix), `""` when it starts with a parameter.
    pub(crate) fn root(&self) -> String {
        let mut root = String::new();
        for segment in &self.segments {
            let Segment::Literal(literal) = segment else { break };
            root.push('/');
            root.push_str(literal);
        }
        root
    }

    /// Whether `path` is its root or under it.
    pub(crate) fn under_root(&self, path: &str) -> bool {
        let root = self.root();
        path.strip_prefix(root.as_str()).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }

    /// What `path` (raw, without the query) captures, if it is taken. A literal segment is
    /// compared where it must stand, not searched for.
    pub(crate) fn captures<'a>(&'a self, path: &'a str) -> Option<Captures<'a>> {
        if !path.starts_with('/') {
            return None;
        }
        let mut captures = Captures::new();
        // Where the next segment starts: past the end once the last one is taken.
        let mut consumed = 1;
        for segment in &self.segments {
            match segment {
                Segment::CatchAll(name) => {
                    let rest = path.get(consumed..).unwrap_or("");
                    return (!rest.is_empty()).then(|| {
                        captures.push((name.as_str(), rest));
                        captures
                    });
                }
                Segment::Literal(literal) => {
                    let end = consumed + literal.len();
                    let whole = matches!(path.as_bytes().get(end), None | Some(b'/'));
                    if !(whole && path.get(consumed..end) == Some(literal.as_str())) {
                        return None;
                    }
                    consumed = end + 1;
                }
                Segment::Param(name) => {
                    let piece = path.get(consumed..)?.split('/').next().filter(|p| !p.is_empty())?;
                    captures.push((name.as_str(), piece));
                    consumed += piece.len() + 1;
                }
            }
        }
        let rest = path.get(consumed.min(path.len())..).unwrap_or("");
        if self.prefix {
            captures.push((PREFIX_REST, rest));
            return Some(captures);
        }
        // Every segment matched: nothing may be left but what the last one took.
        (consumed > path.len() || (self.segments.is_empty() && path == "/")).then_some(captures)
    }

    /// A path both `self` and `other` take, if there is one.
    pub(crate) fn overlap(&self, other: &Pattern) -> Option<String> {
        let mut path = Vec::new();
        overlap(&self.tokens(), &other.tokens(), &mut path).then(|| format!("/{}", path.join("/")))
    }

    fn tokens(&self) -> Vec<Token<'_>> {
        let mut tokens: Vec<Token<'_>> = Vec::new();
        for segment in &self.segments {
            match segment {
                Segment::Literal(l) => tokens.push(Token::Literal(l)),
                Segment::Param(_) => tokens.push(Token::One),
                Segment::CatchAll(_) => tokens.extend([Token::One, Token::Any]),
            }
        }
        if self.prefix {
            tokens.push(Token::Any);
        }
        tokens
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

#[derive(Debug, Clone, Copy)]
enum Token<'a> {
    Literal(&'a str),
    /// One segment.
    One,
    /// Zero or more segments (a catch-all is `One` then `Any`).
    Any,
}

/// Whether some sequence of segments matches both `a` and `b`; `path` gets one. Each step takes
/// a token off one side at least, so it ends.
fn overlap(a: &[Token<'_>], b: &[Token<'_>], path: &mut Vec<String>) -> bool {
    let mark = path.len();
    let found = match (a.first(), b.first()) {
        (None, None) => true,
        (Some(Token::Any), _) => {
            // `Any` takes nothing more, or takes `b`'s first segment and stays.
            overlap(&a[1..], b, path)
                || match b.first() {
                    None => false,
                    Some(Token::Any) => overlap(a, &b[1..], path),
                    Some(Token::Literal(l)) => {
                        path.push((*l).to_owned());
                        overlap(a, &b[1..], path)
                    }
                    Some(Token::One) => {
                        path.push("x".to_owned());
                        overlap(a, &b[1..], path)
                    }
                }
        }
        (_, Some(Token::Any)) => overlap(b, a, path),
        (None, Some(_)) | (Some(_), None) => false,
        (Some(x), Some(y)) => {
            let segment = match (x, y) {
                (Token::Literal(l), Token::Literal(m)) if l == m => Some(*l),
                (Token::Literal(l), Token::One) | (Token::One, Token::Literal(l)) => Some(*l),
                (Token::One, Token::One) => Some("x"),
                _ => None,
            };
            match segment {
                Some(segment) => {
                    path.push(segment.to_owned());
                    overlap(&a[1..], &b[1..], path)
                }
                None => false,
            }
        }
    };
    if !found {
        path.truncate(mark);
    }
    found
}

fn param_name(name: &str) -> Result<String, String> {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') || name == PREFIX_REST {
        return Err(format!("`{{{name}}}`: a parameter is named with letters, digits and `_`"));
    }
    Ok(name.to_owned())
}

/// The upstream path of a rewrite: literal text and `{name}`s of the route's parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rewrite {
    pieces: Vec<Piece>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Param(String),
}

impl Rewrite {
    /// Parses `rewrite` for `pattern`: a `{name}` the pattern lacks is an error naming it.
    pub(crate) fn parse(rewrite: &str, pattern: &Pattern) -> Result<Self, String> {
        if !rewrite.starts_with('/') {
            return Err("a rewrite starts with `/`".to_owned());
        }
        if rewrite.contains(['?', '#']) {
            return Err("a rewrite is a path: no `?` or `#` (the query is forwarded as it came)".to_owned());
        }
        let mut pieces = Vec::new();
        let mut rest = rewrite;
        while let Some(open) = rest.find('{') {
            pieces.push(Piece::Text(rest[..open].to_owned()));
            let close = rest[open..].find('}').ok_or_else(|| "a `{` without its `}`".to_owned())? + open;
            let name = &rest[open + 1..close];
            if !pattern.params().any(|p| p == name) {
                let known: Vec<String> = pattern.params().map(|p| format!("`{{{p}}}`")).collect();
                let known = if known.is_empty() { "none".to_owned() } else { known.join(", ") };
                return Err(format!("`{{{name}}}` is not a parameter of `{pattern}` (it has {known})"));
            }
            pieces.push(Piece::Param(name.to_owned()));
            rest = &rest[close + 1..];
        }
        if rest.contains('}') {
            return Err("a `}` without its `{`".to_owned());
        }
        pieces.push(Piece::Text(rest.to_owned()));
        if pieces.iter().any(|p| matches!(p, Piece::Text(t) if t.split('/').any(|s| s == "." || s == ".."))) {
            return Err("a rewrite has no `.` or `..` segment".to_owned());
        }
        pieces.retain(|p| !matches!(p, Piece::Text(t) if t.is_empty()));
        Ok(Self { pieces })
    }

    /// The upstream path for `captures` (a prefix route's remainder appended after a `/`), then
    /// `?query` when the request had one.
    pub(crate) fn render(&self, captures: &Captures<'_>, query: Option<&str>) -> String {
        let mut len = 0;
        self.emit(captures, query, &mut |piece| len += piece.len());
        let mut path = String::with_capacity(len);
        self.emit(captures, query, &mut |piece| path.push_str(piece));
        path
    }

    /// Hands the pieces of the rendered path to `out`, in order.
    fn emit(&self, captures: &Captures<'_>, query: Option<&str>, out: &mut dyn FnMut(&str)) {
        let (mut empty, mut slash_last) = (true, false);
        for piece in &self.pieces {
            let text = match piece {
                Piece::Text(text) => text.as_str(),
                Piece::Param(name) => captures.iter().find(|(n, _)| n == name).map_or("", |(_, v)| v),
            };
            if !text.is_empty() {
                empty = false;
                slash_last = text.ends_with('/');
            }
            out(text);
        }
        let rest = captures.iter().find(|(n, _)| *n == PREFIX_REST).map_or("", |(_, v)| v);
        if !rest.is_empty() {
            if !slash_last {
                out("/");
            }
            out(rest);
        } else if empty {
            out("/");
        }
        if let Some(query) = query {
            out("?");
            out(query);
        }
    }
}

/// `path`, then `?query` when the request had one: the upstream path of a route that rewrites
/// nothing.
pub(crate) fn with_query(path: &str, query: Option<&str>) -> String {
    let mut target = String::with_capacity(path.len() + query.map_or(0, |q| q.len() + 1));
    target.push_str(path);
    if let Some(query) = query {
        target.push('?');
        target.push_str(query);
    }
    target
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(path: &str) -> Pattern {
        Pattern::parse(path).unwrap()
    }

    fn caps<'a>(pattern: &'a Pattern, path: &'a str) -> Option<Vec<(&'a str, &'a str)>> {
        pattern.captures(path).map(|c| c.to_vec())
    }

    #[test]
    fn patterns_capture_raw_segments() {
        let files = p("/api/files/{bytes}");
        assert_eq!(caps(&files, "/api/files/1024"), Some(vec![("bytes", "1024")]));
        assert_eq!(caps(&files, "/api/files/a%2Fb"), Some(vec![("bytes", "a%2Fb")]));
        assert_eq!(caps(&files, "/api/files/"), None);
        assert_eq!(caps(&files, "/api/files/1/2"), None);
        assert_eq!(caps(&files, "/api/file/1"), None);
        let rest = p("/api/products/{*rest}");
        assert_eq!(caps(&rest, "/api/products/a/b"), Some(vec![("rest", "a/b")]));
        assert_eq!(caps(&rest, "/api/products/"), None);
        assert_eq!(caps(&rest, "/api/products"), None);
        let exact = p("/api/uploads");
        assert_eq!(caps(&exact, "/api/uploads"), Some(vec![]));
        assert_eq!(caps(&exact, "/api/uploads/x"), None);
        let legacy = p("/legacy/*");
        assert_eq!(legacy.router_patterns(), vec!["/legacy".to_owned(), format!("/legacy/{{*{PREFIX_REST}}}")]);
        assert_eq!(caps(&legacy, "/legacy"), Some(vec![(PREFIX_REST, "")]));
        assert_eq!(caps(&legacy, "/legacy/a/b"), Some(vec![(PREFIX_REST, "a/b")]));
        assert_eq!(caps(&legacy, "/legacyx"), None);
        assert_eq!(caps(&p("/*"), "/a/b"), Some(vec![(PREFIX_REST, "a/b")]));
    }

    /// The matcher before [`Pattern::captures`] compared literals in place: by `split`.
    fn captures_by_split<'a>(pattern: &'a Pattern, path: &'a str) -> Option<Captures<'a>> {
        let mut pieces = path.strip_prefix('/')?.split('/');
        let mut captures = Captures::new();
        let mut consumed = 1;
        for segment in &pattern.segments {
            match segment {
                Segment::CatchAll(name) => {
                    let rest = path.get(consumed..).unwrap_or("");
                    return (!rest.is_empty()).then(|| {
                        captures.push((name.as_str(), rest));
                        captures
                    });
                }
                Segment::Literal(literal) => {
                    let piece = pieces.next()?;
                    if piece != literal {
                        return None;
                    }
                    consumed += piece.len() + 1;
                }
                Segment::Param(name) => {
                    let piece = pieces.next().filter(|p| !p.is_empty())?;
                    captures.push((name.as_str(), piece));
                    consumed += piece.len() + 1;
                }
            }
        }
        let rest = path.get(consumed.min(path.len())..).unwrap_or("");
        if pattern.prefix {
            captures.push((PREFIX_REST, rest));
            return Some(captures);
        }
        // Every segment matched: nothing may be left but what the last one took.
        (pieces.next().is_none() || (pattern.segments.is_empty() && path == "/")).then_some(captures)
    }

    proptest::proptest! {
        /// Any path, against patterns of every kind: what the splitting matcher took.
        #[test]
        fn literals_compared_in_place_capture_what_splitting_did(
            path in "(/|/?[ab]{0,2}|/[ab/]{0,8}|//?[ab]{1,3}/{0,2}[ab]{0,3}/?)",
            pattern in proptest::sample::select(vec![
                "/", "/a", "/a/b", "/ab/{id}", "/a/{id}/b", "/{id}", "/{id}/{other}", "/a/{*rest}",
                "/{*rest}", "/a/*", "/*", "/ab/b/*", "/{id}/*",
            ]),
        ) {
            let pattern = p(pattern);
            let want = captures_by_split(&pattern, &path).map(|c| c.to_vec());
            proptest::prop_assert_eq!(caps(&pattern, &path), want);
        }
    }

    #[test]
    fn bad_paths_are_named() {
        for (path, says) in [
            ("api", "starts with `/`"),
            ("/a//b", "empty segment"),
            ("/a/", "empty segment"),
            ("/a/{*rest}/b", "last segment"),
            ("/a/x{id}", "whole segment"),
            ("/a/{id}/{id}", "named twice"),
            ("/a/{}", "letters, digits"),
            ("/a/../b", "`..`"),
            ("/a*", "ends in `/*`"),
            ("/a/%2e", "no `*`, `?`, `#`, `%`"),
        ] {
            let error = Pattern::parse(path).unwrap_err();
            assert!(error.contains(says), "{path}: {error}");
        }
    }

    #[test]
    fn rewrites_name_parameters_the_path_has() {
        let products = p("/api/catalog/products/{*rest}");
        let rewrite = Rewrite::parse("/products/{rest}", &products).unwrap();
        assert_eq!(rewrite.render(&products.captures("/api/catalog/products/SKU-1").unwrap(), None), "/products/SKU-1");
        let error = Rewrite::parse("/products/{sku}", &products).unwrap_err();
        assert!(error.contains("`{sku}` is not a parameter") && error.contains("`{rest}`"), "{error}");
        assert!(Rewrite::parse("products", &products).is_err());
        assert!(Rewrite::parse("/x?y=1", &products).is_err());
        assert!(Rewrite::parse("/x/../{rest}", &products).is_err());
        let legacy = p("/legacy/*");
        let rewrite = Rewrite::parse("/v2", &legacy).unwrap();
        assert_eq!(rewrite.render(&legacy.captures("/legacy/a/b").unwrap(), None), "/v2/a/b");
        assert_eq!(rewrite.render(&legacy.captures("/legacy").unwrap(), None), "/v2");
    }

    /// The upstream path goes into the call's URI as it is: at its exact size, no copy is made.
    #[test]
    fn an_upstream_path_carries_the_query_and_is_built_at_its_exact_size() {
        let products = p("/api/catalog/products/{*rest}");
        let rewrite = Rewrite::parse("/products/{rest}", &products).unwrap();
        let captures = products.captures("/api/catalog/products/SKU-1").unwrap();
        let root = p("/*");
        let to_root = Rewrite::parse("/", &root).unwrap();
        let under = Rewrite::parse("/v2", &root).unwrap();
        for (path, want) in [
            (rewrite.render(&captures, None), "/products/SKU-1"),
            (rewrite.render(&captures, Some("a=1&b=%2F")), "/products/SKU-1?a=1&b=%2F"),
            (rewrite.render(&captures, Some("")), "/products/SKU-1?"),
            (to_root.render(&root.captures("/x/y").unwrap(), Some("q")), "/x/y?q"),
            (to_root.render(&root.captures("/").unwrap(), None), "/"),
            (under.render(&root.captures("/").unwrap(), Some("q")), "/v2?q"),
            (with_query("/api/orders", Some("page=2")), "/api/orders?page=2"),
            (with_query("/api/orders", None), "/api/orders"),
        ] {
            assert_eq!(path, want);
            assert_eq!(path.capacity(), path.len(), "{want}");
        }
    }

    #[test]
    fn overlapping_patterns_give_a_path_both_take() {
        let overlap = |a: &str, b: &str| p(a).overlap(&p(b));
        assert_eq!(overlap("/a/{x}", "/a/b").as_deref(), Some("/a/b"));
        assert_eq!(overlap("/a/{*rest}", "/a/b/{id}").as_deref(), Some("/a/b/x"));
        assert_eq!(overlap("/a/*", "/a").as_deref(), Some("/a"));
        assert_eq!(overlap("/a/*", "/a/b/c").as_deref(), Some("/a/b/c"));
        assert_eq!(overlap("/*", "/healthz").as_deref(), Some("/healthz"));
        assert_eq!(overlap("/a/{x}", "/b/{x}"), None);
        assert_eq!(overlap("/a/{*rest}", "/a"), None);
        assert_eq!(overlap("/a/{x}", "/a/b/c"), None);
        assert_eq!(p("/files/{id}").shape(), p("/files/{name}").shape());
        assert_ne!(p("/files/{id}").shape(), p("/files/{*id}").shape());
    }
}
