//! No two files of a crate import each other, directly or round a longer loop: for each
//! crate of stls, tlsd and tlsc, the graph of its files' references (`use crate::x`,
//! `crate::x::`, `super::`, in code, comments aside) has no cycle. A file is a module:
//! `src/a.rs` and `src/a/mod.rs` are `a`, `src/a/b.rs` is `a::b`; a reference names the
//! module it reaches (`crate::a::b::f` reaches `a::b` if that file exists, else `a`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use stls_tests::bins;

/// The modules of a crate's `src` and their sources: `""` is the root (lib.rs).
fn modules(src: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                // A binary's directory is a crate of its own, which only uses the library.
                if p.file_name().is_some_and(|n| n != "bin") {
                    stack.push(p);
                }
                continue;
            }
            if p.extension().is_none_or(|x| x != "rs") {
                continue;
            }
            let rel = p.strip_prefix(src).expect("under src").with_extension("");
            let mut parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if parts.last().is_some_and(|l| l == "mod") {
                parts.pop();
            }
            let name = parts.join("::");
            if name == "main" {
                continue;
            }
            let name = if name == "lib" { String::new() } else { name };
            out.insert(name, std::fs::read_to_string(&p).expect("read"));
        }
    }
    out
}

/// The longest module of `known` that `path` (`a::b::c`) starts with.
fn reached(path: &[&str], known: &BTreeSet<String>) -> Option<String> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].join("::"))
        .find(|m| known.contains(m))
}

/// The modules one module's code refers to (itself and the root left out).
fn references(me: &str, src: &str, known: &BTreeSet<String>) -> BTreeSet<String> {
    let parent = me.rsplit_once("::").map_or("", |(p, _)| p);
    let mut out = BTreeSet::new();
    for line in src.lines() {
        let code = line.split("//").next().unwrap_or_default();
        for (prefix, base) in [("crate::", ""), ("super::", parent)] {
            let mut rest = code;
            while let Some(i) = rest.find(prefix) {
                let after = &rest[i + prefix.len()..];
                rest = after;
                // `use crate::{a, b::c}`: each item of the group.
                let items: Vec<&str> = match after.strip_prefix('{') {
                    Some(group) => group.split('}').next().unwrap_or("").split(',').collect(),
                    None => vec![after],
                };
                for item in items {
                    let path: String = item
                        .trim()
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                        .collect();
                    let mut segs: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
                    if !base.is_empty() {
                        segs.splice(0..0, base.split("::"));
                    }
                    if let Some(m) = reached(&segs, known) {
                        if m != me && !m.is_empty() {
                            out.insert(m);
                        }
                    }
                }
            }
        }
    }
    out
}

/// A cycle of the graph, as the modules round it, if there is one.
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        done: &mut BTreeSet<String>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == n) {
            let mut c = path[i..].to_vec();
            c.push(n.to_string());
            return Some(c);
        }
        if done.contains(n) {
            return None;
        }
        path.push(n.to_string());
        for m in graph.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, graph, done, path) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(n.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut done, &mut Vec::new()))
}

fn graph_of(mods: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
    let known: BTreeSet<String> = mods.keys().cloned().collect();
    mods.iter()
        .map(|(m, src)| (m.clone(), references(m, src, &known)))
        .collect()
}

/// `STLS_IMPORTS_ROOT`: a tree to judge other than this workspace (another commit's,
/// unpacked with `git archive`).
#[test]
fn no_file_of_a_crate_imports_another_that_imports_it() {
    let root = std::env::var_os("STLS_IMPORTS_ROOT").map_or_else(bins::workspace, Into::into);
    for krate in ["stls", "tlsd", "tlsc", "autossl-shim", "desc"] {
        let mods = modules(&root.join(krate).join("src"));
        assert!(!mods.is_empty(), "{krate}: no module found");
        let graph = graph_of(&mods);
        if krate == "stls" {
            // The reader must see the references it is there to judge.
            assert!(
                graph.values().filter(|r| !r.is_empty()).count() > 5,
                "{graph:?}"
            );
        }
        if let Some(c) = cycle(&graph) {
            panic!("{krate}: an import cycle: {}", c.join(" -> "));
        }
    }
}

#[test]
fn the_check_finds_a_cycle_and_reads_every_form() {
    let mods: BTreeMap<String, String> = [
        ("", "pub mod a;"),
        ("a", "use crate::{b, x};\n// crate::c is only a comment\n"),
        ("b", "fn f() { crate::c::d::g() }"),
        ("c", "use super::a;"),
        ("c::d", "fn g() { super::f() }"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let graph = graph_of(&mods);
    assert_eq!(graph["a"], ["b".to_string()].into_iter().collect());
    assert_eq!(graph["b"], ["c::d".to_string()].into_iter().collect());
    assert_eq!(graph["c::d"], ["c".to_string()].into_iter().collect());
    let c = cycle(&graph).expect("a -> b -> c::d -> c -> a");
    assert_eq!(c.first(), c.last());
    let mut acyclic = graph.clone();
    acyclic.insert("c".into(), BTreeSet::new());
    assert_eq!(cycle(&acyclic), None);
}
