//! Expansion: magic variables as a file is read, then `@(file)` and
//! `%(placeholder)` once every file is in (see the parent module).

use std::collections::BTreeSet;
use std::path::{Component, Path};

use super::{Budget, Entry, ReadOptions};

/// The magic variables of one file.
pub(super) struct Magic {
    table: Vec<(char, String)>,
}

impl Magic {
    pub(super) fn new(host: &Path, original: &Path, section: &str, first: Option<&Path>) -> Self {
        let mut table = Self::of_file(host, original, section, false);
        let first = first.unwrap_or(host);
        table.extend(Self::of_file(first, first, section, true));
        Self { table }
    }

    fn of_file(host: &Path, original: &Path, section: &str, upper: bool) -> Vec<(char, String)> {
        let name = host
            .file_name()
            .map_or(String::new(), |n| n.to_string_lossy().into_owned());
        let dir = host.parent().unwrap_or(Path::new("/"));
        let mut dir_text = dir.to_string_lossy().into_owned();
        if !dir_text.ends_with('/') {
            dir_text.push('/');
        }
        let (stem, ext) = match name.rsplit_once('.') {
            Some((s, e)) => (s.to_string(), e.to_string()),
            None => (name.clone(), String::new()),
        };
        let dir_name = dir
            .file_name()
            .map_or(String::new(), |n| n.to_string_lossy().into_owned());
        let c = |l: char| if upper { l.to_ascii_uppercase() } else { l };
        let mut t = vec![
            (c('p'), host.to_string_lossy().into_owned()),
            (c('s'), name.clone()),
            (c('d'), dir_text),
            (c('e'), ext),
            (c('n'), stem),
            (c('c'), dir_name),
            (c('o'), original.to_string_lossy().into_owned()),
            (c('x'), format!("{}:{section}", original.display())),
        ];
        if !upper {
            let parts = dir.components().filter_map(|p| match p {
                Component::Normal(p) => Some(p.to_string_lossy().into_owned()),
                _ => None,
            });
            for (i, part) in parts.take(10).enumerate() {
                t.push((char::from(b'0' + i as u8), part));
            }
        }
        t
    }

    /// Replaces magic variables in one line. `%%` is `%`, `%(` starts a
    /// placeholder (kept for later); values that depend on the running
    /// instance are kept as written and noted; other letters are empty, as
    /// in uWSGI. Values past the budget are left out (and the read fails).
    pub(super) fn apply(
        &self,
        line: &str,
        notes: &mut BTreeSet<String>,
        file: &Path,
        line_no: usize,
        budget: &mut Budget,
    ) -> String {
        let mut out = String::with_capacity(line.len());
        let mut chars = line.chars().peekable();
        while let Some(ch) = chars.next() {
            if ch != '%' {
                out.push(ch);
                continue;
            }
            let Some(&next) = chars.peek() else {
                out.push('%');
                break;
            };
            chars.next();
            match next {
                '%' => out.push('%'),
                '(' => out.push_str("%("),
                _ => {
                    if let Some((_, v)) = self.table.iter().find(|(k, _)| *k == next) {
                        if budget.expand(v.len()) {
                            out.push_str(v);
                        }
                    } else if "vVhtTkuUgG[".contains(next) {
                        out.push('%');
                        out.push(next);
                        notes.insert(format!(
                            "{}:{line_no}: %{next} depends on the running instance: left as written",
                            file.display()
                        ));
                    } else {
                        notes.insert(format!(
                            "{}:{line_no}: %{next} is no magic variable: uWSGI makes it empty",
                            file.display()
                        ));
                    }
                }
            }
        }
        out
    }
}

/// Expands `@(file)` and `%(placeholder)` in one value. What would take
/// it past the budget is left out (and the read fails).
pub(super) fn expand(
    value: &str,
    all: &[Entry],
    opts: &ReadOptions,
    notes: &mut BTreeSet<String>,
    at: &Entry,
    stack: &mut Vec<String>,
    budget: &mut Budget,
) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(i) = rest.find(['%', '@', '$']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let Some(close) = tail.find(')').filter(|_| tail[1..].starts_with('(')) else {
            out.push_str(&tail[..1]);
            rest = &tail[1..];
            continue;
        };
        let inner = &tail[2..close];
        let whole = &tail[..=close];
        match &tail[..1] {
            "%" => match placeholder(inner, all, opts, notes, stack, budget) {
                Some(v) => {
                    if budget.expand(v.len()) {
                        out.push_str(&v);
                    }
                }
                None => {
                    notes.insert(format!(
                        "{}: placeholder {whole} is not set: left as written",
                        at.at()
                    ));
                    out.push_str(whole);
                }
            },
            "@" => {
                let path = Path::new(inner);
                let open = match &opts.root {
                    Some(root) if path.is_absolute() => {
                        root.join(path.strip_prefix("/").unwrap_or(path))
                    }
                    _ => path.to_path_buf(),
                };
                // A regular file within the budget, as every file read.
                let text = path
                    .is_absolute()
                    .then(|| budget.read(&open).ok())
                    .flatten()
                    .and_then(|bytes| String::from_utf8(bytes).ok());
                match text {
                    Some(text) => {
                        let text = text.trim_end_matches(['\n', '\r']);
                        if budget.expand(text.len()) {
                            out.push_str(text);
                        }
                    }
                    _ => {
                        notes.insert(format!(
                            "{}: {whole} cannot be read here: left as written",
                            at.at()
                        ));
                        out.push_str(whole);
                    }
                }
            }
            _ => {
                notes.insert(format!(
                    "{}: {whole} is the service's environment, unknown here: left as written",
                    at.at()
                ));
                out.push_str(whole);
            }
        }
        rest = &tail[close + 1..];
    }
    out.push_str(rest);
    out
}

/// The value of `%(inner)`: one option's first value, or uWSGI's
/// placeholder maths (tokens separated by spaces, evaluated left to right).
fn placeholder(
    inner: &str,
    all: &[Entry],
    opts: &ReadOptions,
    notes: &mut BTreeSet<String>,
    stack: &mut Vec<String>,
    budget: &mut Budget,
) -> Option<String> {
    let mut lookup = |key: &str, notes: &mut BTreeSet<String>| -> Option<String> {
        if !budget.lookup(stack.len()) {
            return Some(String::new());
        }
        if stack.iter().any(|k| k == key) {
            notes.insert(format!("placeholder %({key}) refers to itself: left empty"));
            return Some(String::new());
        }
        let e = all.iter().find(|e| e.key == key)?;
        stack.push(key.to_string());
        let v = expand(&e.value, all, opts, notes, e, stack, budget);
        stack.pop();
        Some(v)
    };
    if !inner.contains(' ') {
        return lookup(inner, notes);
    }
    let mut current: Option<String> = None;
    let mut op = ' ';
    for token in inner.split(' ').filter(|t| !t.is_empty()) {
        let as_num = |s: &Option<String>| {
            s.as_deref()
                .map_or(0, |v| v.trim().parse::<i64>().unwrap_or(0))
        };
        match token {
            "+" | "-" | "*" | "/" => {
                op = token.chars().next().unwrap_or(' ');
                continue;
            }
            "++" | "--" => {
                if current.is_some() {
                    let n = as_num(&current).saturating_add(if token == "++" { 1 } else { -1 });
                    current = Some(n.to_string());
                }
                op = ' ';
                continue;
            }
            _ => {}
        }
        let value = if token.chars().all(|c| c.is_ascii_digit()) {
            token.to_string()
        } else {
            lookup(token, notes).unwrap_or_default()
        };
        let (a, b) = (as_num(&current), value.trim().parse::<i64>().unwrap_or(0));
        current = Some(match op {
            '+' => a.saturating_add(b).to_string(),
            '-' => a.saturating_sub(b).to_string(),
            '*' => a.saturating_mul(b).to_string(),
            '/' => a.checked_div(b).unwrap_or(0).to_string(),
            _ => current.unwrap_or_default() + &value,
        });
        op = ' ';
    }
    current
}
