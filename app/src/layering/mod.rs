//! The top-level modules of the app import each other without a cycle, and
//! only downwards in the intended layering (issue 11), lowest first:
//!
//! `domain`/`config`/`metrics` → `db`/`telemetry` → `vault`/`audit` →
//! `error` → `auth` → `fleet`/`licensing` → `state` → `web` → `startup` →
//! `cli`. A module may use any module below it, and one of its own layer
//! as long as no cycle results.
//!
//! The test reads `app/src/**/*.rs` as text: comments, string and character
//! literals are blanked out, items under `#[cfg(test)]` are skipped (a test
//! may reach the harness in `web::rbac_tests`, which builds an `AppState`),
//! and every `crate::module` path, including those in `use crate::{a, b}`
//! groups, is an edge from the module of the file to `module`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod scan;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs;
use std::path::{Path, PathBuf};

use scan::{blank_literals, references, without_tests};

/// Edges that exist now and are removed on another branch; each says which.
/// Remove a line when its branch is merged; the list should end up empty.
const ALLOWED: &[(&str, &str, &str)] = &[];

/// The layer of each top-level module, lowest first (see the module docs).
const LAYERS: &[&[&str]] = &[
    &["domain", "config", "metrics"],
    &["db", "telemetry"],
    &["vault", "audit"],
    &["error"],
    &["auth"],
    &["fleet", "licensing"],
    &["state"],
    &["web"],
    &["startup"],
    &["cli"],
    // Entry points for cargo-fuzz (fuzz/) and the corpus replay tests.
    &["fuzzing"],
];

fn layer(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// Where one module first names another.
#[derive(Debug, Clone)]
struct Evidence {
    file: String,
    line: usize,
}

type Graph = BTreeMap<String, BTreeMap<String, Evidence>>;

#[test]
fn the_app_modules_import_each_other_without_a_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = module_graph(&src);
    assert!(
        graph.contains_key("auth") && graph.contains_key("web"),
        "the module graph looks empty: {graph:?}"
    );
    let cycles = cycles(&without_allowed(graph));
    assert!(
        cycles.is_empty(),
        "import cycles between app modules (break each, or if another branch removes \
         an edge, add it to `ALLOWED` naming that branch):\n{}",
        cycles.join("\n")
    );
}

#[test]
fn every_module_imports_only_its_own_layer_or_lower_ones() {
    let graph = without_allowed(module_graph(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
    ));
    let mut wrong = Vec::new();
    for (from, edges) in &graph {
        let Some(own) = layer(from) else {
            wrong.push(format!("{from} has no layer in LAYERS: place it there"));
            continue;
        };
        for (to, ev) in edges {
            if layer(to).is_some_and(|l| l > own) {
                wrong.push(format!(
                    "{from} imports {to}, a higher layer ({}:{})",
                    ev.file, ev.line
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn every_allowed_edge_still_exists() {
    let graph = module_graph(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    for (from, to, branch) in ALLOWED {
        assert!(
            graph.get(*from).is_some_and(|e| e.contains_key(*to)),
            "{from} no longer imports {to} ({branch} merged?): remove it from ALLOWED"
        );
    }
}

#[test]
fn a_cycle_is_named_with_the_places_that_make_it() {
    let mut g = Graph::new();
    let ev = |f: &str| Evidence {
        file: f.into(),
        line: 1,
    };
    g.entry("a".into())
        .or_default()
        .insert("b".into(), ev("a.rs"));
    g.entry("b".into())
        .or_default()
        .insert("c".into(), ev("b.rs"));
    g.entry("c".into())
        .or_default()
        .insert("a".into(), ev("c.rs"));
    g.entry("c".into())
        .or_default()
        .insert("d".into(), ev("c.rs"));
    g.entry("d".into()).or_default();
    let found = cycles(&g);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("a → b (a.rs:1) → c (b.rs:1) → a (c.rs:1)"),
        "{}",
        found[0]
    );
}

/// module → module it imports → where, over every non-test source file.
fn module_graph(src: &Path) -> Graph {
    let lib = fs::read_to_string(src.join("lib.rs")).expect("reading lib.rs");
    let (lib_code, _) = without_tests(&blank_literals(&lib));
    let modules = declared_modules(&lib_code);
    let mut graph: Graph = modules
        .iter()
        .map(|m| (m.clone(), BTreeMap::new()))
        .collect();
    let mut files = Vec::new();
    collect_rs(src, &mut files);
    files.sort();
    let mut test_only: Vec<PathBuf> = Vec::new();
    // Parents come before children in sorted order, except `x.rs` before
    // `x/…`; a file's test modules are known once the file is read, so read
    // everything first, then skip what turned out to be test-only.
    let mut parsed = Vec::new();
    for file in &files {
        let text = fs::read_to_string(file).expect("reading a source file");
        let blanked = blank_literals(&text);
        if blanked.contains("#![cfg(test)]") {
            test_only.push(file.clone());
            continue;
        }
        let (code, tests) = without_tests(&blanked);
        for name in tests {
            test_only.extend(module_files(src, file, &name));
        }
        parsed.push((file.clone(), code));
    }
    for (file, code) in parsed {
        if test_only.iter().any(|t| {
            file == *t || (t.ends_with("mod.rs") && t.parent().is_some_and(|d| file.starts_with(d)))
        }) {
            continue;
        }
        let rel = file.strip_prefix(src).expect("under src");
        let Some(top) = top_module(rel) else {
            continue;
        };
        if !modules.contains(&top) {
            continue;
        }
        for (to, line) in references(&code) {
            if to == top || !modules.contains(&to) {
                continue;
            }
            graph
                .entry(top.clone())
                .or_default()
                .entry(to)
                .or_insert_with(|| Evidence {
                    file: rel.display().to_string(),
                    line,
                });
        }
    }
    graph
}

/// The graph less the edges in [`ALLOWED`].
fn without_allowed(mut graph: Graph) -> Graph {
    for (from, to, _) in ALLOWED {
        if let Some(edges) = graph.get_mut(*from) {
            edges.remove(*to);
        }
    }
    graph
}

fn collect_rs(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("listing src").flatten() {
        let p = entry.path();
        if p.is_dir() {
            collect_rs(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// `web/users/api.rs` → `web`; `cli.rs` → `cli`; the crate roots → none.
fn top_module(rel: &Path) -> Option<String> {
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (name != "lib" && name != "main").then(|| name.to_string())
}

/// The files `mod name;` in `file` may refer to.
fn module_files(src: &Path, file: &Path, name: &str) -> Vec<PathBuf> {
    let parent = file.parent().unwrap_or(src);
    let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    let dir = if matches!(stem, "mod" | "lib" | "main") {
        parent.to_path_buf()
    } else {
        parent.join(stem)
    };
    vec![
        dir.join(format!("{name}.rs")),
        dir.join(name).join("mod.rs"),
    ]
}

/// `mod x;` / `pub mod x;` declarations in the crate root.
fn declared_modules(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in code.lines() {
        let l = line.trim();
        let l = l
            .strip_prefix("pub ")
            .or_else(|| l.strip_prefix("pub(crate) "))
            .unwrap_or(l);
        if let Some(name) = l.strip_prefix("mod ").and_then(|r| r.strip_suffix(';')) {
            out.insert(name.trim().to_string());
        }
    }
    out
}

/// One line per strongly connected component with more than one module:
/// a shortest cycle through it, each edge with the place that makes it.
fn cycles(graph: &Graph) -> Vec<String> {
    let mut found = Vec::new();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    for start in graph.keys() {
        if seen.contains(start) {
            continue;
        }
        let Some(path) = shortest_cycle(graph, start) else {
            continue;
        };
        let component = reachable(graph, start)
            .intersection(&reaching(graph, start))
            .cloned()
            .collect::<BTreeSet<_>>();
        seen.extend(component.iter().cloned());
        let mut text = start.clone();
        for pair in path.windows(2) {
            let ev = &graph[&pair[0]][&pair[1]];
            text.push_str(&format!(" → {} ({}:{})", pair[1], ev.file, ev.line));
        }
        text.push_str(&format!(
            "   [modules in this cycle group: {}]",
            component.into_iter().collect::<Vec<_>>().join(", ")
        ));
        found.push(text);
    }
    found
}

/// The shortest path start → … → start, by breadth-first search.
fn shortest_cycle(graph: &Graph, start: &str) -> Option<Vec<String>> {
    let mut prev: BTreeMap<String, String> = BTreeMap::new();
    let mut queue: VecDeque<String> = VecDeque::new();
    for next in graph.get(start)?.keys() {
        if !prev.contains_key(next) {
            prev.insert(next.clone(), start.to_string());
            queue.push_back(next.clone());
        }
    }
    while let Some(m) = queue.pop_front() {
        if m == start {
            let mut path = vec![start.to_string()];
            let mut cur = prev[start].clone();
            while cur != start {
                path.push(cur.clone());
                cur = prev[&cur].clone();
            }
            path.push(start.to_string());
            path.reverse();
            return Some(path);
        }
        for next in graph.get(&m).into_iter().flat_map(|e| e.keys()) {
            if !prev.contains_key(next) {
                prev.insert(next.clone(), m.clone());
                queue.push_back(next.clone());
            }
        }
    }
    None
}

fn reachable(graph: &Graph, start: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut stack = vec![start.to_string()];
    while let Some(m) = stack.pop() {
        for next in graph.get(&m).into_iter().flat_map(|e| e.keys()) {
            if seen.insert(next.clone()) {
                stack.push(next.clone());
            }
        }
    }
    seen
}

fn reaching(graph: &Graph, target: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut stack = vec![target.to_string()];
    while let Some(m) = stack.pop() {
        for (from, edges) in graph {
            if edges.contains_key(&m) && seen.insert(from.clone()) {
                stack.push(from.clone());
            }
        }
    }
    seen
}
