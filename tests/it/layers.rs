//! The house rule, checked on the sources: modules follow the data (config → sources → engine →
//! diff → verdict → outputs → commands) and an import only ever points down that list; inside a
//! folder module, no two files import each other, directly or around a loop.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level modules from the bottom of the flow up. A module may use the ones before it in this
/// list, never the ones after it. The leaves first: anything may use them.
const LAYERS: &[&[&str]] = &[
    &["error", "redact", "words"],
    &["config"],
    &["sources"],
    &["engine"],
    &["diff"],
    &["verdict"],
    &["history"],
    &["gate"],
    &["report"],
    &["metrics"],
    &["terminal"],
    &["cli"],
    &["commands"],
];

fn rank(module: &str) -> usize {
    LAYERS
        .iter()
        .position(|layer| layer.contains(&module))
        .unwrap_or_else(|| panic!("module '{module}' is not in LAYERS: place it in the flow"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The path of a source file inside the crate, as module names: `src/diff/pack.rs` → [diff, pack].
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let relative = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

fn identifier(text: &str) -> &str {
    let end = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    &text[..end]
}

/// Every path a source text names after `prefix` (`crate::`, `super::`), as its first two
/// segments, with `use crate::{a, b::c}` groups expanded.
fn references(text: &str, prefix: &str) -> BTreeSet<(String, Option<String>)> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find(prefix) {
        let before = rest[..at].chars().last();
        rest = &rest[at + prefix.len()..];
        // `dualrun::crate::` never occurs; `foo_super::` would be another word.
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0usize;
            let mut start = 0usize;
            let mut end = group.len();
            let mut items = Vec::new();
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        items.push(&group[start..i]);
                        end = i;
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        items.push(&group[start..i]);
                        start = i + 1;
                    }
                    _ => {}
                }
            }
            let _ = end;
            for item in items {
                let item = item.trim();
                let first = identifier(item);
                if first.is_empty() || first == "self" {
                    continue;
                }
                let second = item
                    .strip_prefix(first)
                    .and_then(|r| r.strip_prefix("::"))
                    .map(identifier)
                    .filter(|s| !s.is_empty() && !s.starts_with('{'))
                    .map(str::to_string);
                out.insert((first.to_string(), second));
            }
            continue;
        }
        let first = identifier(rest);
        if first.is_empty() {
            continue;
        }
        let second = rest[first.len()..]
            .strip_prefix("::")
            .map(identifier)
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        out.insert((first.to_string(), second));
    }
    out
}

#[test]
fn imports_point_down_the_flow_and_files_form_no_loops() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();

    let mut upward = Vec::new();
    // Folder module → (file → sibling files it uses).
    let mut siblings: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    let mut folder_files: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let path = module_path(&src, file);
        if let [folder, file] = path.as_slice() {
            folder_files
                .entry(folder.clone())
                .or_default()
                .insert(file.clone());
        }
    }
    for file in &files {
        let path = module_path(&src, file);
        let Some(module) = path.first() else { continue };
        if module == "main" || module == "lib" {
            continue;
        }
        let text = std::fs::read_to_string(file).unwrap();
        let shown = file.strip_prefix(&src).unwrap().display().to_string();
        for (target, second) in references(&text, "crate::") {
            if target == *module {
                if let (Some(second), [_, this]) = (&second, path.as_slice())
                    && folder_files[module].contains(second)
                    && second != this
                {
                    siblings
                        .entry(module.clone())
                        .or_default()
                        .entry(this.clone())
                        .or_default()
                        .insert(second.clone());
                }
                continue;
            }
            if rank(&target) > rank(module) {
                upward.push(format!(
                    "src/{shown} uses crate::{target} ({module} is below {target})"
                ));
            }
        }
        if let [folder, this] = path.as_slice() {
            for (target, _) in references(&text, "super::") {
                if folder_files[folder].contains(&target) && target != *this {
                    siblings
                        .entry(folder.clone())
                        .or_default()
                        .entry(this.clone())
                        .or_default()
                        .insert(target);
                }
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports that point back up the flow:\n{}",
        upward.join("\n")
    );

    // A loop among the files of one folder: depth-first search for a back edge.
    let mut loops = Vec::new();
    for (folder, edges) in &siblings {
        fn visit(
            node: &str,
            edges: &BTreeMap<String, BTreeSet<String>>,
            stack: &mut Vec<String>,
            done: &mut BTreeSet<String>,
            loops: &mut Vec<String>,
        ) {
            if let Some(at) = stack.iter().position(|n| n == node) {
                loops.push(format!("{} → {node}", stack[at..].join(" → ")));
                return;
            }
            if !done.insert(node.to_string()) {
                return;
            }
            stack.push(node.to_string());
            for next in edges.get(node).into_iter().flatten() {
                visit(next, edges, stack, done, loops);
            }
            stack.pop();
        }
        let mut done = BTreeSet::new();
        for node in edges.keys() {
            let mut found = Vec::new();
            visit(node, edges, &mut Vec::new(), &mut done, &mut found);
            loops.extend(found.into_iter().map(|l| format!("{folder}/: {l}")));
        }
    }
    assert!(
        loops.is_empty(),
        "files of one module that import each other:\n{}",
        loops.join("\n")
    );
}

#[test]
fn the_reference_parser_sees_groups_and_paths() {
    let text = "use crate::{config::{Plan, Side}, diff, engine::lint::Hazard};\n\
                let x = crate::report::show(&v); use super::pack::Packed;";
    let found = references(text, "crate::");
    assert!(found.contains(&("config".to_string(), None)));
    assert!(found.contains(&("diff".to_string(), None)));
    assert!(found.contains(&("engine".to_string(), Some("lint".to_string()))));
    assert!(found.contains(&("report".to_string(), Some("show".to_string()))));
    let found = references(text, "super::");
    assert!(found.contains(&("pack".to_string(), Some("Packed".to_string()))));
}
