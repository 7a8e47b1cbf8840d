//! The crate's structure: the stages of the pipeline are folders stacked in floors, and a
//! module imports only from its own floor or lower ones, so that every module can be read
//! knowing only the ones below it (and there is no import cycle between top-level modules; a
//! folder counts as one module). Reads the sources: every `crate::name` path in a file of
//! module `m` is an edge `m -> name`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top-level module of every source file, and the modules its `crate::` paths name.
fn edges() -> BTreeMap<String, BTreeSet<String>> {
    fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(Path::new("src"), &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in files {
        let rel = f.strip_prefix("src").unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        if top == "lib" || top == "bin" {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(
            !text.contains("crate::{"),
            "{}: grouped `crate::{{...}}` paths are not scanned; name each module",
            f.display()
        );
        let deps = graph.entry(top.clone()).or_default();
        for (i, _) in text.match_indices("crate::") {
            let name: String = text[i + 7..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() && name != top {
                deps.insert(name);
            }
        }
    }
    graph
}

/// Strongly connected components with more than one module (Tarjan).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct T<'a> {
        g: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a str) {
        let n = t.index.len();
        t.index.insert(v, n);
        t.low.insert(v, n);
        t.stack.push(v);
        t.on.insert(v);
        if let Some(ws) = t.g.get(v) {
            for w in ws {
                let w = w.as_str();
                if !t.g.contains_key(w) {
                    continue;
                }
                if !t.index.contains_key(w) {
                    visit(t, w);
                    let l = t.low[v].min(t.low[w]);
                    t.low.insert(v, l);
                } else if t.on.contains(w) {
                    let l = t.low[v].min(t.index[w]);
                    t.low.insert(v, l);
                }
            }
        }
        if t.low[v] == t.index[v] {
            let mut comp = Vec::new();
            loop {
                let w = t.stack.pop().unwrap();
                t.on.remove(w);
                comp.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                t.out.push(comp);
            }
        }
    }
    let mut t = T {
        g: graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !t.index.contains_key(v.as_str()) {
            visit(&mut t, v);
        }
    }
    t.out
}

/// The floors, lowest first: the ground (used by everything), then the pipeline's stages in
/// the order data flows through them, then the programs that use the whole pipeline.
const FLOORS: &[&[&str]] = &[
    &[
        "adam", "dist", "error", "files", "memory", "pool", "rng", "simd", "threads",
    ],
    &["data"],
    &["model"],
    &["spikes"],
    &["plan"],
    &["backend"],
    &["run"],
    &["train"],
    &["io"],
    &["bench", "experiment"],
];

fn floor(module: &str) -> usize {
    FLOORS
        .iter()
        .position(|f| f.contains(&module))
        .unwrap_or_else(|| panic!("module `{module}` is on no floor of tests/layout.rs"))
}

#[test]
fn no_import_cycle_between_top_level_modules() {
    let g = edges();
    assert!(g.len() > 15, "the scan found the modules ({})", g.len());
    assert!(g["run"].contains("backend"), "the scan sees imports");
    let found = cycles(&g);
    assert!(
        found.is_empty(),
        "import cycles between top-level modules: {found:?} (move what both need down)"
    );
}

#[test]
fn no_stage_imports_from_a_higher_one() {
    let g = edges();
    let mut upward = Vec::new();
    for (m, deps) in &g {
        for d in deps.iter().filter(|d| g.contains_key(*d)) {
            if floor(d) > floor(m) {
                upward.push(format!(
                    "{m} (floor {}) -> {d} (floor {})",
                    floor(m),
                    floor(d)
                ));
            }
        }
    }
    assert!(upward.is_empty(), "imports from a higher floor: {upward:?}");
    for f in FLOORS.iter().flat_map(|f| f.iter()) {
        assert!(g.contains_key(*f), "floor module `{f}` not found in src/");
    }
}

#[test]
fn the_cycle_finder_finds_a_cycle() {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    g.entry("a".into()).or_default().insert("b".into());
    g.entry("b".into()).or_default().insert("c".into());
    g.entry("c".into()).or_default().insert("a".into());
    g.entry("d".into()).or_default().insert("a".into());
    assert_eq!(cycles(&g), vec![vec!["a", "b", "c"]]);
}
