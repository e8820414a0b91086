//! The layering rules of issue "Floors": inside each crate (`core/`,
//! `ffi/`, `api/`), no two source files import each other in a loop, and
//! the C module's files do not call each other in a loop; the C module's
//! protocol-free files (`ngx_upstream_ha_*`) know neither http nor stream
//! ([`protocol_leaks`], docs/stream-design.md §3.4); in the core,
//! each file imports only from its own floor and those below
//! ([`CORE_FLOORS`]).
//!
//! A file imports another when it names an item of the other's module:
//! `use crate::a::b`, `super::x`, or a path such as `crate::a::b::f(..)` in
//! code (a `mod` declaration alone is not an import; a `pub use` is). The
//! loops are the strongly connected components of that graph with more
//! than one file.
//!
//! A path through a re-export (`crate::write::ServerChange`, made by a `pub use`
//! in `layout/mod.rs`) counts as an import of the file that defines the
//! item, and a `pub use` itself is no import of the file making it: a
//! module file may re-export its children without looping with them.
//! `cargo test --test layers -- --nocapture` prints the loops found.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The module path (`["table", "flight"]`) of a source file under `src`.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap();
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap();
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" && stem != "main" {
        parts.push(stem.to_owned());
    }
    parts
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Code without comments, and without `#[cfg(test)]` modules at the end of
/// a file (tests may reach anywhere).
fn code_of(text: &str) -> String {
    let text = [
        "#[cfg(test)]\nmod tests",
        "#[cfg(test)]\npub(crate) mod tests",
    ]
    .iter()
    .filter_map(|m| text.find(m))
    .min()
    .map_or(text, |k| &text[..k]);
    text.lines()
        .map(|l| match l.find("//") {
            Some(k) => &l[..k],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// What the checker knows of one crate: its file modules, the names each
/// file defines, and what each re-exports (`pub use`), so that a path
/// through a re-export (`crate::write::ServerChange`) counts as an import of the
/// file that defines the item, not of the file that re-exports it.
struct Crate {
    modules: BTreeSet<Vec<String>>,
    defines: BTreeMap<Vec<String>, BTreeSet<String>>,
    /// `pub use a::b::X` in module M: M's `X` is `a::b::X` (absolute).
    reexports: BTreeMap<Vec<String>, BTreeMap<String, Vec<String>>>,
    /// `pub use a::b::*` in module M.
    globs: BTreeMap<Vec<String>, Vec<Vec<String>>>,
}

/// `code` with whitespace collapsed and none around path punctuation
/// (a `use` group may span lines).
fn flatten(code: &str) -> String {
    let mut flat = code.split_whitespace().collect::<Vec<_>>().join(" ");
    for p in ["::", "{", "}", ","] {
        flat = flat
            .replace(&format!(" {p}"), p)
            .replace(&format!("{p} "), p);
    }
    flat
}

/// The `pub use ...;` statements of `flat` (re-exports), and `flat`
/// without them.
fn split_reexports(flat: &str) -> (Vec<String>, String) {
    let mut stmts = Vec::new();
    let mut rest = String::new();
    let mut s = flat;
    loop {
        let k = ["pub use ", "pub(crate) use "]
            .iter()
            .filter_map(|m| s.find(m).map(|k| (k, m.len())))
            .min();
        let Some((k, len)) = k else {
            rest.push_str(s);
            break;
        };
        rest.push_str(&s[..k]);
        let end = s[k..].find(';').map_or(s.len(), |e| k + e);
        stmts.push(s[k + len..end].to_owned());
        s = &s[(end + 1).min(s.len())..];
    }
    (stmts, rest)
}

/// The paths named in `flat` that start with `crate::`, `super::`,
/// `self::` or a child module of `me` (`child::x`), `use` groups expanded
/// one level (enough for this tree), each made absolute (segments from
/// the crate root).
fn paths_in(flat: &str, me: &[String], modules: &BTreeSet<Vec<String>>) -> Vec<Vec<String>> {
    let children: Vec<String> = modules
        .iter()
        .filter(|m| m.len() == me.len() + 1 && m.starts_with(me))
        .map(|m| m[me.len()].clone())
        .collect();
    let mut heads: Vec<String> = ["crate", "super", "self"]
        .iter()
        .map(|h| format!("{h}::"))
        .collect();
    heads.extend(children.iter().map(|c| format!("{c}::")));
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut raw: Vec<String> = Vec::new();
    for h in &heads {
        for (k, _) in flat.match_indices(h.as_str()) {
            // Only at the start of a path: not inside a longer identifier
            // (`hab_crate::`) nor after another segment (`a::crate::`).
            if k > 0 {
                let c = flat.as_bytes()[k - 1];
                if word(c) || c == b':' {
                    continue;
                }
            }
            let rest = &flat[k..];
            let end = rest
                .find(|c: char| {
                    !(c.is_ascii_alphanumeric() || c == '_' || c == ':' || c == '{' || c == ',')
                })
                .unwrap_or(rest.len());
            let p = &rest[..end];
            match p.find('{') {
                Some(open) => {
                    let head = &p[..open];
                    let inner_end = rest[open..]
                        .find('}')
                        .map(|e| open + e)
                        .unwrap_or(rest.len());
                    for item in rest[open + 1..inner_end].split(',') {
                        raw.push(format!("{head}{item}"));
                    }
                }
                None => raw.push(p.to_owned()),
            }
        }
    }
    raw.iter()
        .filter_map(|p| absolute(p, me, &children))
        .collect()
}

/// Path `p` (`super::a::B`, `crate::a::B`, `self::B`, `child::B`) from the
/// crate root; `None` for paths outside the crate.
fn absolute(p: &str, me: &[String], children: &[String]) -> Option<Vec<String>> {
    // `X as Y`: the path is X's.
    let p = p.split(" as ").next().unwrap_or(p);
    let mut segs: Vec<&str> = p.split("::").filter(|s| !s.is_empty()).collect();
    let mut out: Vec<String> = Vec::new();
    match segs.first().copied() {
        Some("crate") => {
            segs.remove(0);
        }
        Some("super") => {
            out = me.to_vec();
            while segs.first() == Some(&"super") {
                segs.remove(0);
                out.pop();
            }
        }
        Some("self") => {
            segs.remove(0);
            out = me.to_vec();
        }
        Some(c) if children.iter().any(|x| x == c) => out = me.to_vec(),
        _ => return None,
    }
    out.extend(
        segs.into_iter()
            .filter(|s| *s != "self" && *s != "*")
            .map(str::to_owned),
    );
    Some(out)
}

/// The names a file's code defines (items and methods alike: a path
/// names an item, so a method's name does no harm).
fn defined_names(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let toks: Vec<&str> = code
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '!'))
        .filter(|t| !t.is_empty())
        .collect();
    for w in toks.windows(2) {
        if matches!(
            w[0],
            "fn" | "struct"
                | "enum"
                | "const"
                | "static"
                | "type"
                | "trait"
                | "union"
                | "macro_rules!"
        ) {
            out.insert(w[1].to_owned());
        }
    }
    out
}

impl Crate {
    /// The crate of `files` under `src`, and each file's code without its
    /// re-exports.
    fn read(src: &Path, files: &[PathBuf]) -> (Crate, BTreeMap<Vec<String>, String>) {
        let sources: Vec<(Vec<String>, String)> = files
            .iter()
            .map(|f| (module_of(src, f), fs::read_to_string(f).unwrap()))
            .collect();
        Crate::of(&sources)
    }

    /// The same from (module path, source text) pairs.
    fn of(sources: &[(Vec<String>, String)]) -> (Crate, BTreeMap<Vec<String>, String>) {
        let modules: BTreeSet<Vec<String>> = sources.iter().map(|(m, _)| m.clone()).collect();
        let mut krate = Crate {
            modules,
            defines: BTreeMap::new(),
            reexports: BTreeMap::new(),
            globs: BTreeMap::new(),
        };
        let mut bodies = BTreeMap::new();
        for (me, text) in sources {
            let me = me.clone();
            let code = code_of(text);
            krate.defines.insert(me.clone(), defined_names(&code));
            let (stmts, rest) = split_reexports(&flatten(&code));
            for st in stmts {
                for path in paths_in(&st, &me, &krate.modules) {
                    let star = st.ends_with('*') && !st.contains('{');
                    if star {
                        krate.globs.entry(me.clone()).or_default().push(path);
                    } else if let Some(last) = path.last() {
                        // `a::B as C` re-exports B as C.
                        let name = st
                            .split(',')
                            .filter_map(|it| it.split_once(" as "))
                            .find(|(x, _)| x.ends_with(last.as_str()))
                            .map_or(last.clone(), |(_, y)| y.trim_matches('}').to_owned());
                        krate
                            .reexports
                            .entry(me.clone())
                            .or_default()
                            .insert(name, path);
                    }
                }
            }
            bodies.insert(me, rest);
        }
        (krate, bodies)
    }

    /// The file module that defines what absolute path `p` names.
    fn owner(&self, p: &[String], depth: usize) -> Vec<String> {
        let mut best: Vec<String> = Vec::new();
        let mut used = 0;
        for k in 1..=p.len() {
            if self.modules.contains(&p[..k]) {
                best = p[..k].to_vec();
                used = k;
            }
        }
        let Some(name) = p.get(used) else {
            return best;
        };
        if depth > 8 || self.defines.get(&best).is_some_and(|d| d.contains(name)) {
            return best;
        }
        if let Some(target) = self.reexports.get(&best).and_then(|r| r.get(name)) {
            let mut t = target.clone();
            t.extend(p[used + 1..].iter().cloned());
            return self.owner(&t, depth + 1);
        }
        for g in self.globs.get(&best).into_iter().flatten() {
            let has = self.defines.get(g).is_some_and(|d| d.contains(name))
                || self.reexports.get(g).is_some_and(|r| r.contains_key(name));
            if has {
                let mut t = g.clone();
                t.extend(p[used..].iter().cloned());
                return self.owner(&t, depth + 1);
            }
        }
        best
    }
}

/// The files `code` (module `me`) imports: every path it names, resolved
/// to the file that defines the item; re-exports (`pub use`) are not
/// imports of the file that makes them.
fn imports(krate: &Crate, flat: &str, me: &[String]) -> BTreeSet<Vec<String>> {
    paths_in(flat, me, &krate.modules)
        .iter()
        .map(|p| krate.owner(p, 0))
        .filter(|o| o != me)
        .collect()
}

/// Strongly connected components with more than one node (Tarjan).
fn loops<N: Ord + Clone>(graph: &BTreeMap<N, BTreeSet<N>>) -> Vec<Vec<N>> {
    struct S<'g, N> {
        g: &'g BTreeMap<N, BTreeSet<N>>,
        index: BTreeMap<N, usize>,
        low: BTreeMap<N, usize>,
        stack: Vec<N>,
        on: BTreeSet<N>,
        next: usize,
        out: Vec<Vec<N>>,
    }
    fn visit<N: Ord + Clone>(s: &mut S<'_, N>, v: &N) {
        s.index.insert(v.clone(), s.next);
        s.low.insert(v.clone(), s.next);
        s.next += 1;
        s.stack.push(v.clone());
        s.on.insert(v.clone());
        for w in s.g.get(v).into_iter().flatten() {
            if !s.g.contains_key(w) {
                continue;
            }
            if !s.index.contains_key(w) {
                visit(s, w);
                let l = s.low[v].min(s.low[w]);
                s.low.insert(v.clone(), l);
            } else if s.on.contains(w) {
                let l = s.low[v].min(s.index[w]);
                s.low.insert(v.clone(), l);
            }
        }
        if s.low[v] == s.index[v] {
            let mut c = Vec::new();
            loop {
                let w = s.stack.pop().unwrap();
                s.on.remove(&w);
                let done = &w == v;
                c.push(w);
                if done {
                    break;
                }
            }
            if c.len() > 1 {
                c.sort();
                s.out.push(c);
            }
        }
    }
    let mut s = S {
        g: graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !s.index.contains_key(v) {
            visit(&mut s, v);
        }
    }
    s.out
}

/// The file-level import loops of the crate whose sources are in `src`.
fn crate_loops(src: &Path) -> Vec<Vec<String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let (krate, bodies) = Crate::read(src, &files);
    let graph: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = bodies
        .iter()
        .map(|(me, flat)| (me.clone(), imports(&krate, flat, me)))
        .collect();
    loops(&graph)
        .into_iter()
        .map(|c| {
            c.into_iter()
                .map(|m| {
                    if m.is_empty() {
                        "lib".to_owned()
                    } else {
                        m.join("::")
                    }
                })
                .collect()
        })
        .collect()
}

/// The C files of the module that name (call, or take the address of) a
/// function another one defines.
fn c_loops(dir: &Path) -> Vec<Vec<String>> {
    let files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "c"))
        .collect();
    let text: BTreeMap<String, String> = files
        .iter()
        .map(|f| {
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            (name, strip_c_comments(&fs::read_to_string(f).unwrap()))
        })
        .collect();
    // Functions defined (non-static) in each file: a line that starts a
    // definition, the type on the line before.
    let mut defined: BTreeMap<String, String> = BTreeMap::new();
    for (name, t) in &text {
        let lines: Vec<&str> = t.lines().collect();
        for k in 1..lines.len() {
            let l = lines[k];
            if l.starts_with("ngx_")
                && l.contains('(')
                && !lines[k - 1].starts_with("static")
                && !lines[k - 1].is_empty()
                && !lines[k - 1].ends_with(';')
            {
                let f = &l[..l.find('(').unwrap()];
                defined.insert(f.to_owned(), name.clone());
            }
        }
    }
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (name, t) in &text {
        let mut deps = BTreeSet::new();
        for (f, owner) in &defined {
            // A call, or the function's address (a callback).
            let named = t.match_indices(f.as_str()).any(|(k, _)| {
                let next = t.as_bytes().get(k + f.len()).copied().unwrap_or(b' ');
                let prev = if k == 0 { b' ' } else { t.as_bytes()[k - 1] };
                let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
                !word(next) && !word(prev)
            });
            if owner != name && named {
                deps.insert(owner.clone());
            }
        }
        graph.insert(name.clone(), deps);
    }
    loops(&graph)
}

/// C source without its `/* ... */` comments (a file named in a comment is
/// no call).
fn strip_c_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(k) = rest.find("/*") {
        out.push_str(&rest[..k]);
        match rest[k + 2..].find("*/") {
            Some(e) => rest = &rest[k + 2 + e + 2..],
            None => return out,
        }
    }
    out.push_str(rest);
    out
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn no_file_imports_itself_through_others() {
    let mut found = Vec::new();
    for krate in ["core", "ffi", "api"] {
        for l in crate_loops(&root().join(krate).join("src")) {
            found.push(format!("{krate}: {}", l.join(" -> ")));
        }
    }
    for l in c_loops(&root().join("nginx-module")) {
        found.push(format!("nginx-module: {}", l.join(" -> ")));
    }
    for f in &found {
        eprintln!("loop: {f}");
    }
    assert!(found.is_empty(), "{} import loops", found.len());
}

/// C source without its string and character literals (a message naming
/// `ngx_stream_module` is no use of it); `text` has no comments.
fn strip_c_literals(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in text.chars() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                    out.push(c);
                }
            }
            None => {
                if c == '"' || c == '\'' {
                    quote = Some(c);
                }
                out.push(c);
            }
        }
    }
    out
}

/// What a protocol-free C file (`ngx_upstream_ha_*.c`, `.h`, named
/// `name`, comments stripped) takes from a protocol: an `#include` of a
/// header named `ngx_http*` or `ngx_stream*` (`ngx_http.h`, `ngx_stream.h`,
/// the module headers that include them), or an identifier starting with
/// `ngx_http_` or `ngx_stream_` outside string literals (a type, function
/// or module of theirs). Macros (`NGX_HTTP_SSL`) are not checked: some
/// come from `ngx_auto_config.h`, which every file includes.
fn protocol_leaks(name: &str, code: &str) -> Vec<String> {
    let mut found = Vec::new();
    let protocol = |s: &str| s.starts_with("ngx_http") || s.starts_with("ngx_stream");
    for l in code.lines() {
        let t = l.trim_start();
        if let Some(rest) = t.strip_prefix('#') {
            if let Some(inc) = rest.trim_start().strip_prefix("include") {
                let header = inc
                    .trim()
                    .trim_matches(|c| c == '<' || c == '>' || c == '"');
                if protocol(header) {
                    found.push(format!("{name} includes {header}"));
                }
            }
        }
    }
    let code = strip_c_literals(code);
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut names = BTreeSet::new();
    for head in ["ngx_http_", "ngx_stream_"] {
        for (k, _) in code.match_indices(head) {
            if k > 0 && word(code.as_bytes()[k - 1]) {
                continue;
            }
            let end = code[k..]
                .bytes()
                .position(|c| !word(c))
                .map_or(code.len(), |e| k + e);
            names.insert(code[k..end].to_owned());
        }
    }
    for n in names {
        found.push(format!("{name} names {n}"));
    }
    found
}

/// The protocol-free C files include neither `ngx_http.h` nor
/// `ngx_stream.h` and name nothing of either: the stream module shares
/// them with the http one (docs/stream-design.md §3.4).
#[test]
fn protocol_free_c_files_know_no_protocol() {
    let dir = root().join("nginx-module");
    let mut found = Vec::new();
    let mut checked = 0;
    for e in fs::read_dir(&dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let source = name.ends_with(".c") || name.ends_with(".h");
        if !source || !name.starts_with("ngx_upstream_ha_") {
            continue;
        }
        checked += 1;
        let code = strip_c_comments(&fs::read_to_string(e.path()).unwrap());
        found.extend(protocol_leaks(&name, &code));
    }
    for f in &found {
        eprintln!("protocol: {f}");
    }
    assert!(checked >= 3, "only {checked} ngx_upstream_ha_* files found");
    assert!(found.is_empty(), "{} protocol leaks", found.len());
}

/// The protocol check finds what it must and not what it must not.
#[test]
fn the_protocol_check_finds_leaks() {
    let code = "#include <ngx_config.h>\n\
                #  include <ngx_http.h>\n\
                #include \"ngx_stream_upstream_ha_weak.h\"\n\
                static ngx_http_request_t *r;\n\
                my_ngx_http_x y; ngx_log(\"ngx_stream_module \\\" ngx_http_z\");\n\
                ngx_stream_conf_get(c, \'\"\');\n";
    assert_eq!(
        protocol_leaks("f.c", code),
        [
            "f.c includes ngx_http.h",
            "f.c includes ngx_stream_upstream_ha_weak.h",
            "f.c names ngx_http_request_t",
            "f.c names ngx_stream_conf_get",
        ]
    );
    assert!(protocol_leaks("g.c", "#include <ngx_core.h>\nngx_httpd x;").is_empty());
}

/// The core's floors, bottom up: each file imports only from its own floor
/// and those below (docs/design.md, "Where things go"). A module belongs to
/// the floor of the longest entry naming it or a module above it
/// (`"layout"` holds `layout::tree`).
const CORE_FLOORS: &[(&str, &[&str])] = &[
    (
        "basement: errors, crash points, the configuration, algorithms over plain slices",
        &["error", "crash", "spec", "algo"],
    ),
    (
        "layout and its read side: records, offsets, accessors, pins; a request's own record",
        &["layout", "attempt", "learn"],
    ),
    ("policies and health", &["policy", "health"]),
    (
        "writers: zone open, generations, membership, carry, admin",
        &["write"],
    ),
    (
        "the request path, and the crate root",
        &["request", "testing", ""],
    ),
];

/// The floor of module `m` (index into `floors`), if any entry holds it.
fn floor_of(floors: &[(&str, &[&str])], m: &[String]) -> Option<usize> {
    let mut best: Option<(usize, usize)> = None;
    for (f, (_, entries)) in floors.iter().enumerate() {
        for e in entries.iter() {
            let segs: Vec<&str> = e.split("::").filter(|s| !s.is_empty()).collect();
            let holds = segs.len() <= m.len() && segs.iter().zip(m).all(|(a, b)| a == b);
            if holds && best.is_none_or(|(len, _)| segs.len() > len) {
                best = Some((segs.len(), f));
            }
        }
    }
    best.map(|(_, f)| f)
}

/// The imports of `graph` that go up a floor, and the files on no floor.
fn floor_violations(
    graph: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
    floors: &[(&str, &[&str])],
) -> Vec<String> {
    let name = |m: &[String]| {
        if m.is_empty() {
            "lib".to_owned()
        } else {
            m.join("::")
        }
    };
    let mut out = Vec::new();
    for (me, deps) in graph {
        let Some(mine) = floor_of(floors, me) else {
            out.push(format!("{} is on no floor", name(me)));
            continue;
        };
        for d in deps {
            match floor_of(floors, d) {
                Some(theirs) if theirs > mine => out.push(format!(
                    "{} ({}) imports {} ({})",
                    name(me),
                    floors[mine].0,
                    name(d),
                    floors[theirs].0
                )),
                _ => {}
            }
        }
    }
    out
}

#[test]
fn each_core_file_imports_only_its_floor_and_below() {
    let src = root().join("core").join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let (krate, bodies) = Crate::read(&src, &files);
    let graph: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = bodies
        .iter()
        .map(|(me, flat)| (me.clone(), imports(&krate, flat, me)))
        .collect();
    let found = floor_violations(&graph, CORE_FLOORS);
    for f in &found {
        eprintln!("floor: {f}");
    }
    assert!(found.is_empty(), "{} imports up a floor", found.len());
}

/// The floor rule finds an import up a floor and a file on none.
#[test]
fn the_floor_check_finds_imports_up_a_floor() {
    let m = |p: &str| -> Vec<String> { p.split("::").map(str::to_owned).collect() };
    let floors: &[(&str, &[&str])] = &[("low", &["a"]), ("high", &["b", "a::up"])];
    let graph: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = [
        (m("a::x"), BTreeSet::from([m("a")])),
        (m("a"), BTreeSet::from([m("b::y")])),
        (m("a::up::z"), BTreeSet::from([m("b"), m("a")])),
        (m("c"), BTreeSet::new()),
    ]
    .into_iter()
    .collect();
    let found = floor_violations(&graph, floors);
    assert_eq!(
        found,
        ["a (low) imports b::y (high)", "c is on no floor"],
        "{found:?}"
    );
}

/// The checker itself finds a loop it is shown, and none where there is
/// none (so that the rule, once enforced, can fail).
#[test]
fn the_loop_finder_finds_loops() {
    let g: BTreeMap<u32, BTreeSet<u32>> = [
        (1, BTreeSet::from([2])),
        (2, BTreeSet::from([3])),
        (3, BTreeSet::from([1, 4])),
        (4, BTreeSet::new()),
        (5, BTreeSet::from([4])),
    ]
    .into_iter()
    .collect();
    assert_eq!(loops(&g), vec![vec![1, 2, 3]]);
    // Module `a` re-exports `b`'s B and `c`'s items; `d` names them
    // through `a`, and `a` itself uses its child `c` by a relative path.
    let m = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let sources = vec![
        (m(&[]), "mod a;\nmod d;".to_owned()),
        (
            m(&["a"]),
            "mod b;\nmod c;\npub use b::B;\npub use c::*;\nfn f() { c::g(); }".to_owned(),
        ),
        (m(&["a", "b"]), "pub struct B;".to_owned()),
        (m(&["a", "c"]), "pub fn g() {}\npub fn h() {}".to_owned()),
        (
            m(&["d"]),
            "use crate::a::{B, h};\nuse super::a::b::{self};".to_owned(),
        ),
    ];
    let (krate, bodies) = Crate::of(&sources);
    let of = |me: &[&str]| imports(&krate, &bodies[&m(me)], &m(me));
    assert_eq!(of(&["d"]), BTreeSet::from([m(&["a", "b"]), m(&["a", "c"])]));
    assert_eq!(of(&["a"]), BTreeSet::from([m(&["a", "c"])]));
    assert_eq!(of(&["a", "b"]), BTreeSet::new());
}
