//! The documents that name code stay true to it.
//!
//! - docs/TOUR.md: every file it links to exists, and every function, type or constant it
//!   names in a link is defined in the file the link points to. The tour links code as
//!   ``[`name`](../src/path.rs)`` (or ``[`Type::method`](...)``): a student can click
//!   through, and a rename or a move that leaves the tour pointing at nothing fails here.
//! - docs/RELIABILITY.md: the proof column of its tables names tests, and each one exists:
//!   `file::test` for tests/file.rs, `module::tests::test` for a unit test in src/.

use std::fs;
use std::path::Path;

/// One link of the tour: its text and where it points, relative to docs/.
struct Link {
    text: String,
    target: String,
}

/// Every `[text](target)` in `markdown`.
fn links(markdown: &str) -> Vec<Link> {
    let mut found = Vec::new();
    let mut rest = markdown;
    while let Some(open) = rest.find('[') {
        rest = &rest[open + 1..];
        let Some(close) = rest.find("](") else {
            break;
        };
        let text = &rest[..close];
        let after = &rest[close + 2..];
        let Some(end) = after.find(')') else {
            break;
        };
        if !text.contains('[') {
            found.push(Link {
                text: text.to_string(),
                target: after[..end].to_string(),
            });
        }
        rest = after;
    }
    found
}

/// Whether `source` defines `name` as a function, type, constant, module or macro.
fn defines(source: &str, name: &str) -> bool {
    let kinds = [
        "fn ",
        "struct ",
        "enum ",
        "const ",
        "static ",
        "mod ",
        "type ",
        "trait ",
        "macro_rules! ",
    ];
    source.lines().any(|line| {
        let line = line.trim_start();
        let line = line
            .strip_prefix("pub(crate) ")
            .or_else(|| line.strip_prefix("pub(super) "))
            .or_else(|| line.strip_prefix("pub "))
            .unwrap_or(line);
        kinds.iter().any(|kind| {
            line.strip_prefix(kind).is_some_and(|after| {
                after.starts_with(name)
                    && !after[name.len()..].starts_with(|c: char| c.is_alphanumeric() || c == '_')
            })
        })
    })
}

/// Whether `source` has an `impl` block for `ty` (inherent or of a trait).
fn implements(source: &str, ty: &str) -> bool {
    source.lines().any(|line| {
        let line = line.trim_start();
        line.starts_with("impl")
            && line
                .split_whitespace()
                .any(|word| word.split(['<', '{']).next() == Some(ty))
    })
}

#[test]
fn every_file_and_name_the_tour_links_to_exists() {
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
    let tour = fs::read_to_string(docs.join("TOUR.md")).expect("docs/TOUR.md");
    let mut checked = 0;
    let mut wrong = Vec::new();
    for link in links(&tour) {
        let Some(path) = link.target.strip_prefix("../") else {
            continue;
        };
        let path = path.split('#').next().unwrap_or(path);
        let Ok(source) = fs::read_to_string(docs.join("..").join(path)) else {
            wrong.push(format!("{}: no such file", link.target));
            continue;
        };
        checked += 1;
        let Some(name) = link
            .text
            .strip_prefix('`')
            .and_then(|t| t.strip_suffix('`'))
        else {
            continue;
        };
        if !path.ends_with(".rs") {
            continue;
        }
        // A path written as code names the file itself, checked above.
        if name.contains('/') {
            continue;
        }
        let name = name.trim_end_matches("()");
        let (ty, item) = match name.rsplit_once("::") {
            Some((ty, item)) => (Some(ty), item),
            None => (None, name),
        };
        if !defines(&source, item) {
            wrong.push(format!("{}: defines no `{item}`", link.target));
        }
        if let Some(ty) = ty.filter(|ty| !implements(&source, ty)) {
            wrong.push(format!("{}: has no `impl {ty}`", link.target));
        }
    }
    assert!(
        wrong.is_empty(),
        "docs/TOUR.md is out of date:\n{}",
        wrong.join("\n")
    );
    assert!(
        checked >= 20,
        "the tour links to only {checked} files: is it still a tour?"
    );
}

/// Where a test named in docs/RELIABILITY.md lives, if it exists: `p2p::name` is in
/// tests/p2p.rs, `client::outgoing::tests::name` in src/client/outgoing.rs (or its mod.rs).
fn test_exists(root: &Path, name: &str) -> bool {
    let words: Vec<&str> = name.split("::").collect();
    let (test, files) = match words.as_slice() {
        [file, test] => (*test, vec![root.join("tests").join(format!("{file}.rs"))]),
        [module @ .., "tests", test] if !module.is_empty() => {
            let dir = module.iter().fold(root.join("src"), |path, m| path.join(m));
            (*test, vec![dir.with_extension("rs"), dir.join("mod.rs")])
        }
        _ => return false,
    };
    files.iter().any(|file| {
        fs::read_to_string(file)
            .is_ok_and(|source| source.contains("#[test]") && defines(&source, test))
    })
}

/// Whether mininet/scenarios.py lists a scenario `name` (a row of its `SCENARIOS`).
fn lab_scenario_exists(root: &Path, name: &str) -> bool {
    fs::read_to_string(root.join("mininet/scenarios.py"))
        .is_ok_and(|source| source.contains(&format!("\n    ('{name}', ")))
}

#[test]
fn every_test_the_reliability_tables_cite_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = fs::read_to_string(root.join("docs/RELIABILITY.md")).expect("RELIABILITY.md");
    let mut in_proof_table = false;
    let (mut rows, mut wrong) = (0, Vec::new());
    for line in text.lines() {
        if !line.starts_with('|') {
            in_proof_table = false;
            continue;
        }
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        let Some(&proof) = cells.last() else {
            continue;
        };
        if proof == "proof" {
            in_proof_table = true;
            continue;
        }
        if !in_proof_table || proof.starts_with("---") {
            continue;
        }
        rows += 1;
        let cited: Vec<&str> = proof
            .split('`')
            .skip(1)
            .step_by(2)
            .filter(|code| code.contains("::"))
            .collect();
        // The lab's scenarios are proof too, run by make test-nat.
        let scenarios: Vec<&str> = proof
            .split("`mininet ")
            .skip(1)
            .filter_map(|rest| rest.split('`').next())
            .collect();
        if cited.is_empty() && scenarios.is_empty() {
            wrong.push(format!("no test named for: {}", cells[0]));
        }
        for name in scenarios {
            if !lab_scenario_exists(root, name) {
                wrong.push(format!("no such lab scenario: {name}"));
            }
        }
        for name in cited {
            if !test_exists(root, name) {
                wrong.push(format!("no such test: {name}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "docs/RELIABILITY.md:\n{}",
        wrong.join("\n")
    );
    assert!(
        rows >= 30,
        "only {rows} rows with a proof: did the tables change shape?"
    );
}

#[test]
fn the_check_finds_what_is_missing() {
    let source = "pub fn register(x: u8) {}\nimpl Registry {\n    pub(super) fn announce() {}\n}\n\
                  impl Presence<'_> {}";
    assert!(defines(source, "register"));
    assert!(defines(source, "announce"));
    assert!(!defines(source, "reg"), "a prefix is not a name");
    assert!(!defines(source, "remove"));
    assert!(implements(source, "Registry"));
    assert!(
        implements(source, "Presence"),
        "generics are not part of the name"
    );
    assert!(!implements(source, "Client"));
    let found = links("see [`register`](../src/server/connection.rs) and [x](http://e)");
    assert_eq!(found.len(), 2);
    assert_eq!(found[0].text, "`register`");
    assert_eq!(found[0].target, "../src/server/connection.rs");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    assert!(test_exists(root, "docs::the_check_finds_what_is_missing"));
    assert!(test_exists(
        root,
        "lines::tests::a_last_line_cut_short_can_be_dropped"
    ));
    assert!(!test_exists(root, "docs::no_such_test"));
    assert!(!test_exists(root, "lines::tests::no_such_test"));
    assert!(!test_exists(root, "nowhere::a_test"));
}
