//! The reference stays true: docs/cli.md is the binary's own --help (regenerate it with
//! `scripts/cli-reference.sh > docs/cli.md`), and every relative link of the README and docs/
//! points at a file that exists.

use std::path::Path;
use std::process::Command;

#[test]
fn the_cli_reference_is_the_binarys_help() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let output = Command::new("bash")
        .arg(root.join("scripts/cli-reference.sh"))
        .arg(env!("CARGO_BIN_EXE_dualrun"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let generated = String::from_utf8(output.stdout).unwrap();
    let committed = std::fs::read_to_string(root.join("docs/cli.md")).unwrap();
    assert!(
        generated == committed,
        "docs/cli.md is out of date: run scripts/cli-reference.sh > docs/cli.md"
    );
}

#[test]
fn relative_links_of_the_docs_resolve() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut pages = vec![root.join("README.md")];
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            pages.push(path);
        }
    }
    let mut broken = Vec::new();
    for page in &pages {
        let text = std::fs::read_to_string(page).unwrap();
        let dir = page.parent().unwrap();
        let mut rest = text.as_str();
        while let Some(at) = rest.find("](") {
            rest = &rest[at + 2..];
            let Some(end) = rest.find(')') else { break };
            let target = rest[..end].split('#').next().unwrap_or("").trim();
            if target.is_empty() || target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            if !dir.join(target).exists() {
                broken.push(format!("{}: {target}", page.display()));
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}
