//! `cargo xtask layers`: the agent's modules import one another without a
//! cycle, and its top-level layers only import the layers declared before
//! them in `havip-agent/src/lib.rs`. (Between crates, cargo itself forbids
//! cycles.) A small scanner rather than a crate such as cargo-modules: that
//! would need nightly rustdoc JSON or a download this machine cannot make.
//!
//! Every `.rs` file of the library is one module; an edge goes from a module
//! to every module it names through `crate::…`, `super::…` or `self::…`, in
//! `use` trees and in paths in code. A `use` indented in a file belongs to an
//! inline module (`mod tests`), whose `super` is the file's own module.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};

/// Crates that must stay light, and what they must not depend on (even
/// indirectly): the model is pure, the CLI a thin client of the API.
pub const CRATE_RULES: [(&str, &[&str]); 3] = [
    ("havip-model", &["tokio", "aya", "redb", "axum", "hyper"]),
    ("havip-api", &["aya", "redb", "axum", "havip-ebpf", "havip-agent"]),
    ("havipctl", &["aya", "redb", "axum", "havip-ebpf", "havip-agent"]),
];

/// Checks `cargo tree -p KRATE --format {p}` output (one `name vX.Y.Z` a
/// line) against the crates `krate` must not depend on.
pub fn check_crate_deps(krate: &str, forbidden: &[&str], tree: &str) -> Result<()> {
    let found: BTreeSet<&str> = tree
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| forbidden.contains(name))
        .collect();
    if !found.is_empty() {
        bail!(
            "{krate} depends on {} (directly or not); it must not depend on any of {}",
            found.into_iter().collect::<Vec<_>>().join(", "),
            forbidden.join(", ")
        );
    }
    eprintln!("xtask: {krate} depends on none of {}", forbidden.join(", "));
    Ok(())
}

/// Module path (`control::observer`) -> the file it lives in.
type Modules = BTreeMap<String, PathBuf>;
/// Module -> the modules it imports.
type Graph = BTreeMap<String, BTreeSet<String>>;

/// Checks the library under `src` (a crate root with `lib.rs`).
pub fn check(src: &Path) -> Result<()> {
    let modules = modules(src)?;
    let graph = graph(&modules)?;
    let mut problems = cycles(&graph);
    problems.extend(layer_breaches(src, &graph)?);
    if !problems.is_empty() {
        bail!("module layering of {} is broken:\n  {}", src.display(), problems.join("\n  "));
    }
    eprintln!("xtask: {} modules of {}, no import cycle, layers in order", modules.len(), src.display());
    Ok(())
}

/// Checks a crate under `src` (a `lib.rs` or a `main.rs` root) for import
/// cycles between its modules; its `lib.rs` order is not a layering.
pub fn check_cycles(src: &Path) -> Result<()> {
    let modules = modules(src)?;
    let problems = cycles(&graph(&modules)?);
    if !problems.is_empty() {
        bail!("module layering of {} is broken:\n  {}", src.display(), problems.join("\n  "));
    }
    eprintln!("xtask: {} modules of {}, no import cycle", modules.len(), src.display());
    Ok(())
}

fn modules(src: &Path) -> Result<Modules> {
    let mut out = Modules::new();
    let mut stack = vec![src.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src).expect("under src").with_extension("");
            let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
            match parts.last().map(String::as_str) {
                // Beside a lib.rs, the binary is another crate: it imports
                // the library by name. Alone, it is the crate root.
                Some("main") if parts.len() == 1 && src.join("lib.rs").exists() => continue,
                Some("main") if parts.len() == 1 => {
                    parts.pop();
                }
                // src/bin/*: crates of their own.
                _ if parts.first().map(String::as_str) == Some("bin") => continue,
                Some("lib" | "mod") => {
                    parts.pop();
                }
                _ => {}
            }
            out.insert(parts.join("::"), path);
        }
    }
    Ok(out)
}

/// The module `path` (segments after `crate`) names: its longest prefix
/// that is a module.
fn resolve(modules: &Modules, path: &[String]) -> Option<String> {
    (0..=path.len()).rev().map(|n| path[..n].join("::")).find(|m| modules.contains_key(m))
}

fn graph(modules: &Modules) -> Result<Graph> {
    let mut graph = Graph::new();
    for (module, file) in modules {
        let text = fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let here: Vec<String> = module.split("::").filter(|s| !s.is_empty()).map(str::to_owned).collect();
        let mut edges = BTreeSet::new();
        for (indented, path) in paths(&text) {
            let (first, rest) = path.split_first().expect("paths are not empty");
            let base: Vec<String> = match first.as_str() {
                "crate" => Vec::new(),
                // In an inline module `super` is the file's module.
                "super" if indented => here.clone(),
                "super" => here[..here.len().saturating_sub(1)].to_vec(),
                "self" if !indented => here.clone(),
                _ => continue,
            };
            let full: Vec<String> = base.into_iter().chain(rest.iter().cloned()).collect();
            if let Some(target) = resolve(modules, &full) {
                if target != *module && !target.is_empty() {
                    edges.insert(target);
                }
            }
        }
        graph.insert(module.clone(), edges);
    }
    Ok(graph)
}

/// Every path a file names: each leaf of every `use` tree, and each
/// `crate::…`/`super::…` path in code; with whether it was indented.
fn paths(text: &str) -> Vec<(bool, Vec<String>)> {
    let mut out = Vec::new();
    let mut lines = text.lines().filter(|l| !l.trim_start().starts_with("//"));
    while let Some(line) = lines.next() {
        let indented = line.starts_with(char::is_whitespace);
        let t = line.trim_start();
        let stmt = ["use ", "pub use ", "pub(crate) use "].iter().find_map(|k| t.strip_prefix(k));
        if let Some(start) = stmt {
            // A `use` statement, possibly over several lines.
            let mut tree = start.to_owned();
            while !tree.contains(';') {
                let Some(next) = lines.next() else { break };
                tree.push_str(next);
            }
            // `x as y` -> `x@y`, then no whitespace at all.
            let tree = tree.split(';').next().unwrap_or("").split_whitespace().collect::<Vec<_>>().join(" ");
            let tree = tree.replace(" as ", "@").replace(' ', "");
            out.extend(expand(&tree).into_iter().map(|p| (indented, p)));
            continue;
        }
        for word in ["crate::", "super::"] {
            let mut s = line;
            while let Some(i) = s.find(word) {
                let path: String =
                    s[i..].chars().take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':').collect();
                out.push((indented, path.split("::").filter(|p| !p.is_empty()).map(str::to_owned).collect()));
                s = &s[i + word.len()..];
            }
        }
    }
    out
}

/// The leaves of a `use` tree without whitespace (`x as y` written `x@y`):
/// `a::{b,c::{d,e}}` -> `a::b`, `a::c::d`, `a::c::e` (`self` in a group
/// names the group's path).
fn expand(tree: &str) -> Vec<Vec<String>> {
    let Some(open) = tree.find('{') else {
        let path = tree.split('@').next().unwrap_or(tree);
        let segs: Vec<String> =
            path.split("::").filter(|s| !s.is_empty() && *s != "*").map(str::to_owned).collect();
        return if segs.is_empty() { Vec::new() } else { vec![segs] };
    };
    let prefix = tree[..open].trim_end_matches("::");
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let mut out = Vec::new();
    let (mut depth, mut start) = (0, 0);
    let bytes = inner.as_bytes();
    for i in 0..=inner.len() {
        let c = bytes.get(i).copied().unwrap_or(b',');
        match c {
            b'{' => depth += 1,
            b'}' => depth -= 1,
            b',' if depth == 0 => {
                let part = &inner[start..i];
                start = i + 1;
                if part.is_empty() {
                    continue;
                }
                let joined = match part.split('@').next() {
                    Some("self") => prefix.to_owned(),
                    _ if prefix.is_empty() => part.to_owned(),
                    _ => format!("{prefix}::{part}"),
                };
                out.extend(expand(&joined));
            }
            _ => {}
        }
    }
    out
}

/// Each cycle once, as `a -> b -> a`.
fn cycles(graph: &Graph) -> Vec<String> {
    let mut found = BTreeSet::new();
    for start in graph.keys() {
        // Depth-first search for a way back to `start`.
        let mut stack = vec![(start.clone(), vec![start.clone()])];
        let mut seen = BTreeSet::new();
        while let Some((node, path)) = stack.pop() {
            for next in graph.get(&node).into_iter().flatten() {
                if next == start {
                    let mut cycle = path.clone();
                    // One spelling per cycle: rotate to its smallest module.
                    let min = cycle.iter().enumerate().min_by_key(|(_, m)| *m).map_or(0, |(i, _)| i);
                    cycle.rotate_left(min);
                    let first = cycle[0].clone();
                    cycle.push(first);
                    found.insert(format!("import cycle: {}", cycle.join(" -> ")));
                } else if seen.insert(next.clone()) {
                    let mut p = path.clone();
                    p.push(next.clone());
                    stack.push((next.clone(), p));
                }
            }
        }
    }
    found.into_iter().collect()
}

/// Imports from a top-level layer to one declared after it in `lib.rs`.
fn layer_breaches(src: &Path, graph: &Graph) -> Result<Vec<String>> {
    let lib = fs::read_to_string(src.join("lib.rs")).context("reading lib.rs")?;
    let order: Vec<&str> =
        lib.lines().filter_map(|l| l.trim().strip_prefix("pub mod ")?.strip_suffix(';')).collect();
    let rank = |module: &str| order.iter().position(|l| module.split("::").next() == Some(*l));
    let mut out = Vec::new();
    for (from, tos) in graph {
        let Some(rf) = rank(from) else { continue };
        for to in tos {
            if let Some(rt) = rank(to) {
                if rt > rf {
                    out.push(format!(
                        "layer breach: {from} imports {to}, but {} comes after {} in lib.rs",
                        order[rt], order[rf]
                    ));
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn use_trees_expand_to_their_leaves() {
        assert_eq!(
            expand("crate::{a::{b,c::D},e,f::{self,G}}"),
            [
                s(&["crate", "a", "b"]),
                s(&["crate", "a", "c", "D"]),
                s(&["crate", "e"]),
                s(&["crate", "f"]),
                s(&["crate", "f", "G"])
            ]
        );
        assert_eq!(expand("super::feed::Feed"), [s(&["super", "feed", "Feed"])]);
    }

    #[test]
    fn a_forbidden_dependency_is_named() {
        let tree = "havipctl v0.1.0 (/x)\nhyper v1.0.0\naya v0.14.0\n";
        let e = check_crate_deps("havipctl", &["aya", "redb"], tree).unwrap_err().to_string();
        assert_eq!(e, "havipctl depends on aya (directly or not); it must not depend on any of aya, redb");
        check_crate_deps("havipctl", &["redb"], tree).unwrap();
    }

    /// The check must fail when a cycle is added: a throwaway crate with one.
    #[test]
    fn a_cycle_and_a_layer_breach_are_refused() {
        let dir = std::env::temp_dir().join(format!("xtask-layers-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("low")).unwrap();
        fs::write(dir.join("lib.rs"), "pub mod low;\npub mod high;\n").unwrap();
        fs::write(dir.join("low/mod.rs"), "pub mod a;\npub mod b;\n").unwrap();
        fs::write(dir.join("low/a.rs"), "use super::b::B;\npub struct A;\n").unwrap();
        fs::write(dir.join("low/b.rs"), "pub struct B;\n").unwrap();
        fs::write(dir.join("high.rs"), "use crate::low::{a::A, b};\n").unwrap();
        check(&dir).unwrap();

        fs::write(dir.join("low/b.rs"), "use crate::low::a::A;\npub struct B;\n").unwrap();
        let e = format!("{:#}", check(&dir).unwrap_err());
        assert!(e.contains("import cycle: low::a -> low::b -> low::a"), "{e}");

        fs::write(dir.join("low/b.rs"), "pub struct B;\nfn f() { crate::high::g(); }\n").unwrap();
        let e = format!("{:#}", check(&dir).unwrap_err());
        assert!(e.contains("layer breach: low::b imports high"), "{e}");
        let _ = fs::remove_dir_all(&dir);
    }
}
