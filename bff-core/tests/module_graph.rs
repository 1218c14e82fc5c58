//! The top modules of `bff-core` depend on each other one way: no import circle, so each can be
//! read (and changed) knowing only what is below it. Read from the sources: every `crate::<top>`
//! a module's non-test code names.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn sources(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_dir() {
        for entry in std::fs::read_dir(path).expect("a source directory") {
            sources(&entry.expect("an entry").path(), out);
        }
    } else if path.extension().is_some_and(|e| e == "rs") {
        out.push(path.to_owned());
    }
}

/// Each top module and the top modules its non-test code names.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut tops = BTreeMap::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if name != "lib" {
            tops.insert(name, path);
        }
    }
    let names: BTreeSet<String> = tops.keys().cloned().collect();
    let mut graph = BTreeMap::new();
    for (name, path) in &tops {
        let mut files = Vec::new();
        sources(path, &mut files);
        let mut deps = BTreeSet::new();
        for file in files {
            let file_name = file.file_name().unwrap().to_string_lossy();
            if file_name.ends_with("tests.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&file).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap_or("");
            for (i, _) in code.match_indices("crate::") {
                let rest = &code[i + "crate::".len()..];
                let pieces: Vec<&str> = match rest.strip_prefix('{') {
                    Some(list) => list.split('}').next().unwrap_or("").split(',').collect(),
                    None => vec![rest],
                };
                for piece in pieces {
                    let top: String =
                        piece.trim().chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
                    if top != *name && names.contains(&top) {
                        deps.insert(top);
                    }
                }
            }
        }
        graph.insert(name.clone(), deps);
    }
    graph
}

/// A circle through `from`, if there is one.
fn circle(graph: &BTreeMap<String, BTreeSet<String>>, from: &str) -> Option<Vec<String>> {
    fn walk(graph: &BTreeMap<String, BTreeSet<String>>, at: &str, path: &mut Vec<String>) -> Option<Vec<String>> {
        for next in &graph[at] {
            if next == &path[0] {
                let mut circle = path.clone();
                circle.push(next.clone());
                return Some(circle);
            }
            if !path.contains(next) {
                path.push(next.clone());
                if let Some(found) = walk(graph, next, path) {
                    return Some(found);
                }
                path.pop();
            }
        }
        None
    }
    walk(graph, from, &mut vec![from.to_owned()])
}

#[test]
fn the_top_modules_import_one_way() {
    let graph = graph();
    assert!(graph.contains_key("upstream") && graph["proxy"].contains("upstream"), "the graph was read: {graph:?}");
    for module in graph.keys() {
        if let Some(circle) = circle(&graph, module) {
            panic!("an import circle: {}", circle.join(" → "));
        }
    }
}

#[test]
fn the_leaves_stay_leaves() {
    let graph = graph();
    // Leaves import nothing of ours but other leaves (`routes` puts `middleware`'s guards on and
    // takes `routing`'s handlers).
    let leaves = ["problem", "identity", "config", "body", "middleware", "routes", "routing"];
    for leaf in leaves {
        let beyond: Vec<_> = graph[leaf].iter().filter(|m| !leaves.contains(&m.as_str())).collect();
        assert!(beyond.is_empty(), "`{leaf}` imports {beyond:?}");
    }
}
