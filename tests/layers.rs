//! The layers of `src/` point one way, and no source file imports another that imports it back.
//!
//! Read from the `crate::…` and `super::…` paths of every file (in `use` lines or inline), as a
//! newcomer would: a file imports the module file a path names (`a/b.rs`, `a/b/mod.rs`, `a.rs`
//! or `a/mod.rs`, longest match). A parent naming its own children (declarations, re-exports) is
//! not counted. Two checks, both failing CI with what to fix:
//! 1. no cycle between files (strongly connected groups of two or more);
//! 2. no file imports a layer above its own: transport (`grpc/`, `cli/`, `server`, `config`,
//!    `auth`) → calls (`calls/`) → core (`delivery/`, `error`, `ops/gauges`) → store (`store/`)
//!    → base (`model`, `ops/metrics`, `ops/telemetry`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use regex::Regex;

type Module = Vec<String>;

/// Every module file under `src/` (binaries excluded), by module path.
fn module_files(src: &Path) -> BTreeMap<Module, PathBuf> {
    let mut files = BTreeMap::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                if path != src.join("bin") {
                    dirs.push(path);
                }
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let relative = path
                .strip_prefix(src)
                .expect("under src")
                .with_extension("");
            let mut module: Module = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if module.last().is_some_and(|m| m == "mod") {
                module.pop();
            }
            if module == ["lib"] || module == ["main"] {
                module.clear();
            }
            files.insert(module, path);
        }
    }
    files
}

/// The module file a path names: its longest prefix that is a file.
fn file_of(files: &BTreeMap<Module, PathBuf>, path: &[String]) -> Option<Module> {
    (1..=path.len())
        .rev()
        .map(|k| path[..k].to_vec())
        .find(|prefix| files.contains_key(prefix))
}

/// Which module files each module file imports.
fn imports(files: &BTreeMap<Module, PathBuf>) -> BTreeMap<Module, BTreeSet<Module>> {
    let group = Regex::new(r"\b(crate|super|self)((?:::[A-Za-z_]\w*)*)::\{([^;]*?)\}").unwrap();
    let single = Regex::new(r"\b(crate|super|self)((?:::[A-Za-z_]\w*)+)").unwrap();
    let item = Regex::new(r"[A-Za-z_][\w:]*").unwrap();
    let comment = Regex::new(r"//[^\n]*").unwrap();
    let mut edges = BTreeMap::new();
    for (module, path) in files {
        let text = std::fs::read_to_string(path).expect("read source");
        let text = comment.replace_all(&text, "");
        // `self` is the file's own module (`a/b.rs` and `a/b/mod.rs` are both `a::b`), `super`
        // its parent. (Taking `a/b.rs`'s parent for `self` once dropped every sibling import,
        // and with them three circles.)
        let base: Module = module.clone();
        let split = |s: &str| -> Vec<String> {
            s.split("::")
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect()
        };
        let mut targets: Vec<(String, Vec<String>)> = Vec::new();
        for caps in group.captures_iter(&text) {
            let prefix = split(&caps[2]);
            for inner in item.find_iter(&caps[3]) {
                let mut full = prefix.clone();
                full.extend(split(inner.as_str()));
                targets.push((caps[1].to_owned(), full));
            }
        }
        for caps in single.captures_iter(&text) {
            targets.push((caps[1].to_owned(), split(&caps[2])));
        }
        let mut out = BTreeSet::new();
        for (head, mut parts) in targets {
            let mut full = match head.as_str() {
                "crate" => Vec::new(),
                "self" => base.clone(),
                _ => base[..base.len().saturating_sub(1)].to_vec(),
            };
            // `super::super::x`: one level more for each.
            while parts.first().is_some_and(|p| p == "super") {
                parts.remove(0);
                full.pop();
            }
            full.extend(parts.into_iter().filter(|p| p != "self"));
            if let Some(target) = file_of(files, &full)
                && target != *module
                && !target.is_empty()
                && !target.starts_with(module)
            {
                out.insert(target);
            }
        }
        edges.insert(module.clone(), out);
    }
    edges
}

/// Strongly connected groups of two or more modules (Tarjan).
fn cycles(edges: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<Module>> {
    struct Walk<'a> {
        edges: &'a BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<Module, usize>,
        low: BTreeMap<Module, usize>,
        stack: Vec<Module>,
        groups: Vec<Vec<Module>>,
    }
    impl Walk<'_> {
        fn visit(&mut self, v: &Module) {
            let n = self.index.len();
            self.index.insert(v.clone(), n);
            self.low.insert(v.clone(), n);
            self.stack.push(v.clone());
            for w in self.edges.get(v).into_iter().flatten() {
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.low[v].min(self.low[w]);
                    self.low.insert(v.clone(), low);
                } else if self.stack.contains(w) {
                    let low = self.low[v].min(self.index[w]);
                    self.low.insert(v.clone(), low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut group = Vec::new();
                while let Some(w) = self.stack.pop() {
                    let done = w == *v;
                    group.push(w);
                    if done {
                        break;
                    }
                }
                if group.len() > 1 {
                    self.groups.push(group);
                }
            }
        }
    }
    let mut walk = Walk {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        groups: Vec::new(),
    };
    for v in edges.keys() {
        if !walk.index.contains_key(v) {
            walk.visit(v);
        }
    }
    walk.groups
}

/// The layer of a module: higher layers may import lower ones, never the reverse.
fn layer(module: &Module) -> (usize, &'static str) {
    match module.first().map(String::as_str) {
        None => (4, "transport"),
        Some("grpc" | "cli" | "server" | "config" | "auth" | "console") => (4, "transport"),
        // Observability: the gauges sample the store and the core; recording is the base.
        Some("ops") if module.get(1).map(String::as_str) == Some("gauges") => (2, "core"),
        Some("ops") => (0, "base"),
        Some("calls") => (3, "calls"),
        Some("delivery" | "error") => (2, "core"),
        Some("store") => (1, "store"),
        Some("model") => (0, "base"),
        Some(other) => panic!("src/{other}: add it to a layer in tests/layers.rs"),
    }
}

fn name(module: &Module) -> String {
    if module.is_empty() {
        "lib".into()
    } else {
        module.join("/")
    }
}

fn edges() -> BTreeMap<Module, BTreeSet<Module>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    imports(&module_files(&src))
}

#[test]
fn no_source_file_imports_another_that_imports_it_back() {
    let groups = cycles(&edges());
    let described: Vec<String> = groups
        .iter()
        .map(|g| {
            let mut names: Vec<String> = g.iter().map(name).collect();
            names.sort();
            names.join(", ")
        })
        .collect();
    assert!(
        described.is_empty(),
        "import cycles between source files (layers should point one way; move what both sides \
         need down a layer): {described:#?}"
    );
}

#[test]
fn no_layer_imports_one_above_it() {
    let mut upward = Vec::new();
    for (module, targets) in edges() {
        let (own, own_name) = layer(&module);
        for target in targets {
            let (their, their_name) = layer(&target);
            if their > own {
                upward.push(format!(
                    "{} ({own_name}) imports {} ({their_name})",
                    name(&module),
                    name(&target)
                ));
            }
        }
    }
    assert!(upward.is_empty(), "imports that point up: {upward:#?}");
}

#[test]
fn the_check_sees_a_cycle_when_there_is_one() {
    // The checker itself: two files naming each other form one group.
    let a: Module = vec!["a".into()];
    let b: Module = vec!["b".into()];
    let c: Module = vec!["c".into()];
    let edges = BTreeMap::from([
        (a.clone(), BTreeSet::from([b.clone()])),
        (b.clone(), BTreeSet::from([a.clone(), c.clone()])),
        (c.clone(), BTreeSet::new()),
    ]);
    let groups = cycles(&edges);
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0].len(), 2);
}

#[test]
fn the_check_reads_sibling_imports_in_every_kind_of_file() {
    // A planted tree: siblings naming each other through `super::` (in `x/a.rs`, `x/b.rs`),
    // and a `mod.rs` child naming its parent's sibling.
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    let write = |path: &str, text: &str| {
        let path = src.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write("lib.rs", "mod x;\nmod y;\n");
    write("x/mod.rs", "mod a;\nmod b;\n");
    write("x/a.rs", "use super::b::Thing;\n");
    write("x/b.rs", "use super::a::Other;\n");
    write("y/mod.rs", "mod c;\n");
    write("y/c/mod.rs", "use super::super::x::a::Other;\n");
    let files = module_files(src);
    let edges = imports(&files);
    let module = |path: &str| -> Module { path.split("::").map(str::to_owned).collect() };
    assert_eq!(edges[&module("x::a")], BTreeSet::from([module("x::b")]));
    assert_eq!(edges[&module("y::c")], BTreeSet::from([module("x::a")]));
    let groups = cycles(&edges);
    assert_eq!(groups.len(), 1, "{edges:?}");
    assert_eq!(groups[0].len(), 2);
}
