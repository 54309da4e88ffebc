//! The host's modules import each other without cycles: every module can be
//! read, tested and moved knowing only what lies below it.
//!
//! The graph is read from the source: each file is a module, and a path
//! `crate::a::b::…` or `super::…` in its code (tests left out) is an edge
//! to the deepest module file it names. The one exception is the generated
//! bindings (`bindings.rs`): wasmtime's `bindgen!` names the host's own
//! resource types there (`with:`), so the capabilities it links point back
//! at it by construction.

#![allow(missing_docs, clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Modules allowed to point back at the modules that use them.
const GENERATED: &[&str] = &["bindings"];

fn source_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            source_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src/providers/model.rs` → `providers::model`; `mod.rs` and `lib.rs`
/// name their folder.
fn module_of(src: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts
        .last()
        .is_some_and(|p| p == "mod" || p == "lib" || p == "main")
    {
        parts.pop();
    }
    parts.join("::")
}

/// The code of `text` before its first `#[cfg(test)]`, without comments
/// (doc links name modules without importing them).
fn code_without_tests(text: &str) -> String {
    let code = text.find("#[cfg(test)]").map_or(text, |at| &text[..at]);
    code.lines()
        .map(|line| line.find("//").map_or(line, |at| &line[..at]))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Paths of the form `crate::a::b` or `super::a` in `code`, as absolute
/// module paths, with their `use` groups (`crate::a::{b, c::d}`) expanded.
fn referenced_paths(module: &str, code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    for start in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(found) = code[from..].find(start) {
            let at = from + found;
            from = at + start.len();
            if at > 0 && (ident(bytes[at - 1]) || bytes[at - 1] == b':') {
                continue;
            }
            // The path's segments, stopping at anything but `ident::`.
            let mut end = at;
            while end < bytes.len() && (ident(bytes[end]) || bytes[end] == b':') {
                end += 1;
            }
            let path = &code[at..end];
            let mut base: Vec<String> = if start == "crate::" {
                Vec::new()
            } else {
                // `super` is the module's parent (a `mod.rs` module is
                // already named after its folder).
                let mut parts: Vec<String> = module
                    .split("::")
                    .filter(|p| !p.is_empty())
                    .map(String::from)
                    .collect();
                parts.pop();
                parts
            };
            let rest = path.strip_prefix(start).unwrap_or("");
            let mut segments: Vec<&str> = rest.split("::").filter(|s| !s.is_empty()).collect();
            // `super::super::…`
            while segments.first() == Some(&"super") {
                segments.remove(0);
                base.pop();
            }
            let prefix: Vec<String> = base
                .into_iter()
                .chain(segments.iter().map(|s| s.to_string()))
                .collect();
            // A group: `crate::a::{b, c::d}`.
            if end < bytes.len() && bytes[end] == b'{' {
                let close = code[end..].find('}').map_or(end, |c| end + c);
                for item in code[end + 1..close].split(',') {
                    let item = item.trim().trim_start_matches("self");
                    let item: String = item
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                        .collect();
                    let mut full = prefix.clone();
                    full.extend(item.split("::").filter(|s| !s.is_empty()).map(String::from));
                    out.push(full.join("::"));
                }
            } else {
                out.push(prefix.join("::"));
            }
        }
    }
    out
}

/// The deepest known module that `path` lies in.
fn owning_module<'m>(modules: &'m BTreeSet<String>, path: &str) -> Option<&'m String> {
    let mut parts: Vec<&str> = path.split("::").collect();
    while !parts.is_empty() {
        if let Some(module) = modules.get(&parts.join("::")) {
            return Some(module);
        }
        parts.pop();
    }
    None
}

#[test]
fn the_host_modules_import_each_other_without_cycles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    source_files(&src, &mut files);
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(&src, f)).collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let module = module_of(&src, file);
        if GENERATED.contains(&module.as_str()) {
            continue;
        }
        let text = std::fs::read_to_string(file).unwrap();
        for path in referenced_paths(&module, &code_without_tests(&text)) {
            if let Some(target) = owning_module(&modules, &path)
                && *target != module
                && !target.is_empty()
                // A module may name its own submodules.
                && !target.starts_with(&format!("{module}::"))
                && !module.is_empty()
            {
                edges
                    .entry(module.clone())
                    .or_default()
                    .insert(target.clone());
            }
        }
    }
    // Depth-first search for a back edge.
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(node.to_string(), 1);
        stack.push(node.to_string());
        for next in edges.get(node).into_iter().flatten() {
            match state.get(next.as_str()).copied().unwrap_or(0) {
                1 => {
                    let from = stack.iter().position(|n| n == next).unwrap();
                    let mut cycle = stack[from..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                0 => {
                    if let Some(cycle) = visit(next, edges, state, stack) {
                        return Some(cycle);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(node.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for module in edges.keys() {
        if state.get(module.as_str()).copied().unwrap_or(0) == 0
            && let Some(cycle) = visit(module, &edges, &mut state, &mut Vec::new())
        {
            panic!("an import cycle: {}", cycle.join(" -> "));
        }
    }
    // The reader sees the imports it should: a sanity check on the parse.
    assert!(
        edges["providers::model"].contains("providers::call"),
        "{edges:?}"
    );
    assert!(edges["agent"].contains("manifest"), "{edges:?}");
}

#[test]
fn paths_are_read_relative_to_their_module() {
    let paths = referenced_paths("a::b", "use super::c::{d, e::f};\nlet x = crate::g::h();");
    assert_eq!(paths, ["g::h", "a::c::d", "a::c::e::f"]);
    assert_eq!(referenced_paths("a", "use super::x;"), ["x"]);
    let code = code_without_tests("use crate::a; // see crate::b\n#[cfg(test)]\nuse crate::c;");
    assert_eq!(referenced_paths("m", &code), ["a"]);
}
