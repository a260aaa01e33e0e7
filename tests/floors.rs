//! The floors of the code: every module of `src/` may import only what its
//! row of the "Floors" table in docs/ARCHITECTURE.md allows, so the rule a
//! reader sees there is the rule CI enforces. An import is any path into the
//! crate written in code — `use crate::…`, an inline `crate::x::y(…)`, a
//! `super::super::…` that climbs into another module — not what comments and
//! strings say. The checker's self-test reads a fixture tree with forbidden
//! imports of every kind, which it must find.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// What each floor may import: `None` for "everything".
type Rules = BTreeMap<String, Option<BTreeSet<String>>>;

/// The rows of the "Floors" table: `| `floor` | what | may import |`, the
/// last cell a list of `module`s, `—` for nothing, or `everything`.
fn rules_from(doc: &str) -> Rules {
    let section = doc
        .split("\n## ")
        .find(|s| s.starts_with("Floors"))
        .expect("docs/ARCHITECTURE.md has a \"## Floors\" section");
    let mut rules = Rules::new();
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        let Some(last) = cells.last() else { continue };
        let floors = ticked(cells[0]);
        let allowed = if last.contains("everything") {
            None
        } else {
            Some(ticked(last).into_iter().collect())
        };
        for f in floors {
            rules.insert(f, allowed.clone());
        }
    }
    rules
}

/// The `code` spans of a table cell.
fn ticked(cell: &str) -> Vec<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .map(|s| s.trim_end_matches('/').to_string())
        .collect()
}

/// `text` with comments, string and character literals blanked out (line
/// structure kept), so that only code is searched.
fn code_only(text: &str) -> String {
    let b: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let blank = |out: &mut String, c: char| out.push(if c == '\n' { '\n' } else { ' ' });
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == '/' && b.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == '*' && b.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, b[i]);
                    i += 1;
                }
            }
        } else if c == 'r'
            && matches!(next, Some('"') | Some('#'))
            && !i
                .checked_sub(1)
                .is_some_and(|p| b[p].is_alphanumeric() || b[p] == '_')
        {
            // A raw string: r"…", r#"…"#, …
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                match b.get(j) {
                    None => break,
                    Some('"') if (1..=hashes).all(|k| b.get(j + k) == Some(&'#')) => {
                        j += 1 + hashes;
                        break;
                    }
                    Some(&ch) => {
                        blank(&mut out, ch);
                        j += 1;
                    }
                }
            }
            i = j;
        } else if c == '"' {
            i += 1;
            while i < b.len() && b[i] != '"' {
                if b[i] == '\\' {
                    i += 1;
                }
                if let Some(&ch) = b.get(i) {
                    blank(&mut out, ch);
                }
                i += 1;
            }
            i += 1;
        } else if c == '\'' && (next == Some('\\') || b.get(i + 2) == Some(&'\'')) {
            // A character literal ('x', '\n', '\u{..}'); a lifetime has no closing quote.
            i += 1;
            while i < b.len() && b[i] != '\'' {
                if b[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// The module path of a source file (`src/http/auth/mod.rs` → `http::auth`).
fn module_path(file: &Path, src: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap();
    let mut parts: Vec<String> = rel
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The top-level modules `code` (of the module at `path`) reaches, with the
/// line of each: `crate::x…`, `crate::{x, y::z}`, and `super::` chains that
/// climb out of the file's own top module.
fn reached(code: &str, path: &[String]) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (n, line) in code.lines().enumerate() {
        let mut rest = line;
        while let Some(at) = rest.find("crate::").or_else(|| rest.find("super::")) {
            let before_ok = !rest[..at].ends_with(|c: char| is_ident(c) || c == '$');
            let tail = &rest[at..];
            if tail.starts_with("crate::") && before_ok {
                let after = &tail["crate::".len()..];
                if let Some(group) = after.strip_prefix('{') {
                    let inner = group.split('}').next().unwrap_or("");
                    for item in inner.split(',') {
                        let head: String =
                            item.trim().chars().take_while(|&c| is_ident(c)).collect();
                        if !head.is_empty() {
                            found.push((n + 1, head));
                        }
                    }
                } else {
                    let head: String = after.chars().take_while(|&c| is_ident(c)).collect();
                    if !head.is_empty() {
                        found.push((n + 1, head));
                    }
                }
                rest = &tail["crate::".len()..];
            } else if tail.starts_with("super::") && before_ok {
                let mut up = 0;
                let mut t = tail;
                while let Some(r) = t.strip_prefix("super::") {
                    up += 1;
                    t = r;
                }
                let head: String = t.chars().take_while(|&c| is_ident(c)).collect();
                // Climbing as many levels as the path is deep reaches the crate root.
                if up >= path.len() && !head.is_empty() {
                    found.push((n + 1, head));
                }
                rest = &tail[tail.len() - t.len()..];
            } else {
                rest = &tail[1..];
            }
        }
    }
    found
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Every import in `src` that its floor's rule forbids, as
/// `file:line: floor imports module`; files of floors the table does not
/// name are reported too.
fn violations(src: &Path, rules: &Rules) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let path = module_path(&file, src);
        let floor = path.first().cloned().unwrap_or_default();
        if floor == "lib" {
            continue; // the list of floors itself
        }
        let shown = file
            .strip_prefix(src.parent().unwrap_or(src))
            .unwrap_or(&file)
            .display()
            .to_string();
        let Some(rule) = rules.get(&floor) else {
            out.push(format!(
                "{shown}: floor `{floor}` has no row in the Floors table"
            ));
            continue;
        };
        let Some(allowed) = rule else { continue };
        let code = code_only(&std::fs::read_to_string(&file).unwrap());
        for (line, module) in reached(&code, &path) {
            if module != floor && !allowed.contains(&module) {
                out.push(format!("{shown}:{line}: `{floor}` imports `{module}`"));
            }
        }
    }
    out
}

#[test]
fn every_floor_imports_only_what_architecture_md_allows() {
    let doc = std::fs::read_to_string(root().join("docs/ARCHITECTURE.md")).unwrap();
    let rules = rules_from(&doc);
    for floor in [
        "media", "names", "config", "stream", "record", "restream", "rtc", "http",
    ] {
        assert!(rules.contains_key(floor), "no rule for `{floor}`");
    }
    let found = violations(&root().join("src"), &rules);
    assert!(
        found.is_empty(),
        "imports the Floors table of docs/ARCHITECTURE.md forbids:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_checker_finds_forbidden_imports_of_every_kind() {
    let rules = rules_from(
        "# x\n\n## Floors\n\n| floor | what | may import |\n|---|---|---|\n\
         | `media` | m | — |\n| `record` | r | `media` |\n| `restream` | s | `media` |\n\
         | `http` | h | everything |\n",
    );
    let fixture = root().join("tests/fixtures/floors/src");
    let found = violations(&fixture, &rules);
    let want = [
        "src/media/deep/parse.rs:5: `media` imports `record`",
        "src/record/mod.rs:3: `record` imports `restream`",
        "src/record/mod.rs:4: `record` imports `http`",
        "src/record/mod.rs:9: `record` imports `http`",
        "src/unlisted.rs: floor `unlisted` has no row in the Floors table",
    ];
    assert_eq!(found, want, "found:\n{}", found.join("\n"));
}

#[test]
fn comments_and_strings_are_not_code() {
    let code = code_only(
        "let a = \"crate::http\"; // crate::http\n/* crate::rtc /* nested */ */ let b = 'c';\n\
         let r = r#\"crate::rtc\"#; fn f<'a>(x: &'a str) { crate::media::x() }",
    );
    assert!(!code.contains("http") && !code.contains("rtc"), "{code}");
    assert!(code.contains("crate::media::x()"), "{code}");
    assert!(code.contains("<'a>"), "lifetimes stay: {code}");
}
