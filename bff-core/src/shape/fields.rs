//! Sparse fieldsets: `?fields=name,recentOrders.id` keeps only those fields of a JSON response.

use std::collections::BTreeMap;

use axum::extract::Request;
use serde_json::{Map, Value};

/// The most fields one `fields=` may name.
const MAX_FIELDS: usize = 64;
/// The deepest a field path may go (`a.b.c` is 3).
const MAX_DEPTH: usize = 8;

/// A parsed `fields=` value: each key keeps the whole value or a nested selection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSet(BTreeMap<String, FieldSet>);

impl FieldSet {
    /// Parses `a,b.c,b.d`; an empty segment (`a,,b`, `a.`) is an error naming the input.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut root = FieldSet::default();
        let paths: Vec<&str> = spec.split(',').map(str::trim).collect();
        if paths.len() > MAX_FIELDS {
            return Err(format!("at most {MAX_FIELDS} fields may be selected"));
        }
        for path in paths {
            if path.is_empty() || path.split('.').any(str::is_empty) {
                return Err(format!("`{spec}` has an empty field name"));
            }
            if path.split('.').count() > MAX_DEPTH {
                return Err(format!("`{path}` is nested deeper than {MAX_DEPTH} levels"));
            }
            let mut node = &mut root;
            for segment in path.split('.') {
                node = node.0.entry(segment.to_owned()).or_default();
            }
        }
        Ok(root)
    }

    fn is_leaf(&self) -> bool {
        self.0.is_empty()
    }
}

/// Keeps only the selected fields of `value`, applying a selection to every element of an array.
///
/// Errors with the dotted path of the first selected field that no object has.
pub fn project(value: Value, fields: &FieldSet) -> Result<Value, String> {
    project_at(value, fields, "")
}

fn project_at(value: Value, fields: &FieldSet, at: &str) -> Result<Value, String> {
    if fields.is_leaf() {
        return Ok(value);
    }
    match value {
        Value::Array(items) => {
            items.into_iter().map(|item| project_at(item, fields, at)).collect::<Result<_, _>>().map(Value::Array)
        }
        Value::Object(mut object) => {
            let mut kept = Map::with_capacity(fields.0.len());
            for (name, sub) in &fields.0 {
                let path = if at.is_empty() { name.clone() } else { format!("{at}.{name}") };
                let value = object.remove(name).ok_or_else(|| path.clone())?;
                kept.insert(name.clone(), project_at(value, sub, &path)?);
            }
            Ok(Value::Object(kept))
        }
        // A nested selection on a null (a degraded part) keeps the null.
        Value::Null => Ok(Value::Null),
        _ => Err(fields
            .0
            .keys()
            .next()
            .map(|k| if at.is_empty() { k.clone() } else { format!("{at}.{k}") })
            .unwrap_or_default()),
    }
}

/// The `fields` query parameter of a request, parsed; `None` when absent.
pub(crate) fn requested(request: &Request) -> Option<Result<FieldSet, String>> {
    let query = request.uri().query()?;
    let (_, spec) = url::form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "fields")?;
    Some(FieldSet::parse(&spec))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn home() -> Value {
        json!({"name": "Ada", "recentOrders": [{"id": 1, "total": 2.5}, {"id": 2, "total": 3.0}], "badge": null})
    }

    #[test]
    fn table() {
        let cases: &[(&str, Result<Value, &str>)] = &[
            ("name", Ok(json!({"name": "Ada"}))),
            ("name,badge", Ok(json!({"name": "Ada", "badge": null}))),
            ("recentOrders.id", Ok(json!({"recentOrders": [{"id": 1}, {"id": 2}]}))),
            ("recentOrders", Ok(json!({"recentOrders": [{"id": 1, "total": 2.5}, {"id": 2, "total": 3.0}]}))),
            (
                "recentOrders.id,recentOrders.total,name",
                Ok(json!({"name": "Ada", "recentOrders": [{"id": 1, "total": 2.5}, {"id": 2, "total": 3.0}]})),
            ),
            ("nope", Err("nope")),
            ("recentOrders.nope", Err("recentOrders.nope")),
            ("name.first", Err("name.first")),
            ("badge.count", Ok(json!({"badge": null}))),
        ];
        for (spec, expected) in cases {
            let got = project(home(), &FieldSet::parse(spec).unwrap());
            match expected {
                Ok(value) => assert_eq!(got.as_ref(), Ok(value), "{spec}"),
                Err(path) => assert_eq!(got, Err((*path).to_owned()), "{spec}"),
            }
        }
    }

    #[test]
    fn empty_segments_are_refused() {
        for spec in ["", "a,,b", "a.", ".a"] {
            assert!(FieldSet::parse(spec).is_err(), "{spec}");
        }
        assert!(FieldSet::parse(&vec!["a"; MAX_FIELDS + 1].join(",")).is_err());
        assert!(FieldSet::parse(&["a"; MAX_DEPTH + 1].join(".")).is_err());
        assert!(FieldSet::parse(&["a"; MAX_DEPTH].join(".")).is_ok());
    }

    /// The selection as a `fields=` list again: every leaf's dotted path.
    fn render(set: &FieldSet) -> String {
        fn walk(set: &FieldSet, prefix: &str, out: &mut Vec<String>) {
            for (name, child) in &set.0 {
                let path = if prefix.is_empty() { name.clone() } else { format!("{prefix}.{name}") };
                if child.is_leaf() {
                    out.push(path);
                } else {
                    walk(child, &path, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(set, "", &mut out);
        out.join(",")
    }

    proptest::proptest! {
        /// Any `fields=` is a selection or a message, never a panic; an accepted one written out
        /// again selects the same.
        #[test]
        fn a_fields_list_is_parsed_or_refused_and_round_trips(spec in "[a-z.,]{0,40}|\\PC{0,60}") {
            if let Ok(set) = FieldSet::parse(&spec) {
                let again = FieldSet::parse(&render(&set));
                proptest::prop_assert_eq!(again.as_ref(), Ok(&set), "{}", render(&set));
            }
        }
    }
}
