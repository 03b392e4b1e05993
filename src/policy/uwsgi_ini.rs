//! A reader of uWSGI ini files, faithful enough to import a policy from
//! them and to check how an app is configured.
//!
//! It follows uWSGI 2.0 (`core/ini.c`, `core/config.c`), checked against
//! Debian's uWSGI 2.0.21 with `--show-config`:
//!
//! - Only the asked section is read (`[uwsgi]`, or `file.ini:section`).
//!   A line is a comment only when it *starts* with `;` or `#`: in
//!   `key = value ; text` the value is `value ; text`.
//! - `key = value`; a bare `key` is a flag with an empty value. Repeated
//!   keys are all kept, in order (`socket` may be given many times).
//! - Magic variables (`%d`, `%n`, `%c`, `%p`, `%s`, `%e`, `%0`..`%9`,
//!   `%%`, …) are replaced as each file is read, so they refer to the file
//!   they appear in. `ini = FILE[:section]`, `include` and `inherit` are
//!   read in place ("expand asap"); `ini = :section` reads another section
//!   of the last file read.
//! - After everything is read, `%(key)` placeholders are replaced by the
//!   *first* value of `key` (placeholder maths such as `%(a + 1)` too), and
//!   `@(file)` by the file's content. An unknown placeholder stays as it is,
//!   as uWSGI leaves it. `$(VAR)` (an environment variable of the service)
//!   is left alone and noted: this process cannot know that environment.
//!
//! Files are read through [`safe_open`](super::safe_open): only regular
//! files, at most 1 MiB each. One read is bounded as a whole too (see
//! [`MAX_FILES`] and the others below): uWSGI has no such bounds, but the
//! daemon reads, as root, files an app names on its command line, and
//! whatever they include. Errors name the file, the line and what is
//! wrong, never what the line says: they reach `status`, which every user
//! may read, and the file may be one they cannot.
//!
//! Option names are matched exactly. uWSGI does *not* take `reload_on_rss`
//! for `reload-on-rss` in ini files (`uwsgi --strict` rejects it as an
//! unknown directive; without `--strict` it silently becomes a placeholder
//! and the option is off). Only environment variables (`UWSGI_RELOAD_ON_RSS`)
//! turn `_` into `-`. So [`UwsgiIni::get`] is exact, and
//! [`UwsgiIni::underscore_spellings`] finds such keys so that callers can
//! say that they have no effect.

use std::collections::BTreeSet;
use std::io;
use std::path::{Component, Path, PathBuf};

use thiserror::Error;

mod expand;
use super::safe_open::{self, MAX_FILE, Symlinks};
use expand::{Magic, expand};

/// How deep `ini =` / `include =` may nest before it is taken for a loop.
const MAX_DEPTH: usize = 16;
/// Files one read may open: the ini files, their includes and `@(file)`s.
const MAX_FILES: usize = 64;
/// Bytes all these files may hold together (each at most [`MAX_FILE`]).
const MAX_BYTES: u64 = 2 << 20;
/// Options one read may hold.
const MAX_ENTRIES: usize = 10_000;
/// Bytes that magic variables, placeholders and `@(file)` may add.
const MAX_EXPANSION: usize = 1 << 20;
/// Placeholder look-ups (`%(key)`, each key of placeholder maths).
const MAX_LOOKUPS: usize = 10_000;
/// How deep placeholders may refer to placeholders (each level is a
/// recursion: thousands would overflow the stack).
const MAX_NESTING: usize = 32;

#[derive(Debug, Error)]
pub enum IniError {
    #[error("failed to read {path}: {cause}")]
    Read { path: PathBuf, cause: io::Error },
    #[error("{path}:{line}: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}: has no [{section}] section")]
    NoSection { path: PathBuf, section: String },
}

/// One option as read, after expansion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub value: String,
    /// The file it is in (the host path, as uWSGI would see it), and the
    /// 1-based line; line 0 for options set before any file.
    pub file: PathBuf,
    pub line: usize,
}

impl Entry {
    /// `file:line: key`, for messages.
    pub fn at(&self) -> String {
        if self.line == 0 {
            format!("{} (set before the files)", self.key)
        } else {
            format!("{}:{}: {}", self.file.display(), self.line, self.key)
        }
    }
}

/// How to read: where host paths are, and what comes before the file.
#[derive(Clone, Debug, Default)]
pub struct ReadOptions {
    /// Absolute paths (the file, its includes, `@(file)`) are opened under
    /// this directory; magic variables still see the host path.
    pub root: Option<PathBuf>,
    /// Options set before any file, as uWSGI's `UWSGI_*` environment
    /// variables do (Debian's init script sets `deb-confname` that way).
    pub preset: Vec<(String, String)>,
    /// Files read before the main one, as earlier `--ini` arguments
    /// (Debian's `/usr/share/uwsgi/conf/default.ini`).
    pub before: Vec<PathBuf>,
}

/// The options of one uWSGI instance, in the order uWSGI assembles them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UwsgiIni {
    entries: Vec<Entry>,
    files: Vec<PathBuf>,
    notes: Vec<String>,
}

impl UwsgiIni {
    /// Reads `path`, or `path:section`, from the host.
    pub fn read(path: &Path) -> Result<Self, IniError> {
        Self::read_with(path, &ReadOptions::default())
    }

    /// Reads `spec` (`file.ini` or `file.ini:section`) with `opts`.
    pub fn read_with(spec: &Path, opts: &ReadOptions) -> Result<Self, IniError> {
        Self::read_checked(spec, opts, Symlinks::Follow)
    }

    /// Reads `spec` as [`UwsgiIni::read`] does, for a path an app named
    /// (on its master's command line): no file, the first one or any it
    /// includes, is opened through a symlink.
    pub fn read_named_by_app(spec: &Path) -> Result<Self, IniError> {
        Self::read_checked(spec, &ReadOptions::default(), Symlinks::Refuse)
    }

    fn read_checked(spec: &Path, opts: &ReadOptions, symlinks: Symlinks) -> Result<Self, IniError> {
        let (mut path, section) = split_spec(spec);
        if opts.root.is_none() && path.is_relative() {
            path = std::path::absolute(&path).map_err(|cause| IniError::Read {
                path: path.clone(),
                cause,
            })?;
        }
        let mut loader = Loader::new(opts, symlinks);
        for before in &opts.before {
            let (p, s) = split_spec(before);
            loader.load(&p, &s, None, None)?;
        }
        loader.load(&path, &section, None, None)?;
        loader.finish()
    }

    /// Reads one section of `text`, which is the content of `path`.
    /// Includes it names are read from the host.
    pub fn parse(path: &Path, text: &str, section: &str) -> Result<Self, IniError> {
        let opts = ReadOptions::default();
        let mut loader = Loader::new(&opts, Symlinks::Follow);
        loader.load(path, section, Some(text), None)?;
        loader.finish()
    }

    /// The last value of `key` (options given once take the last one).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.last(key).map(|e| e.value.as_str())
    }

    /// Every value of `key`, in order.
    pub fn get_all(&self, key: &str) -> Vec<&str> {
        self.entries
            .iter()
            .filter(|e| e.key == key)
            .map(|e| e.value.as_str())
            .collect()
    }

    /// The last entry of `key`, with its file and line.
    pub fn last(&self, key: &str) -> Option<&Entry> {
        self.entries.iter().rev().find(|e| e.key == key)
    }

    /// The first entry of `key` (what a placeholder refers to; the master
    /// FIFO uWSGI starts with).
    pub fn first(&self, key: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.key == key)
    }

    /// A boolean option as uWSGI reads it: set (a bare `key`, `true`, `1`,
    /// `yes`, anything else) unless its last value is `false`, `off`, `no`
    /// or `0`.
    pub fn flag(&self, key: &str) -> bool {
        self.get(key).is_some_and(|v| {
            let v = v.trim().to_ascii_lowercase();
            !matches!(v.as_str(), "false" | "off" | "no" | "0")
        })
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Every file read, includes too, in order (host paths).
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// What was left unexpanded or could not be followed, and why.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// Entries spelled with `_` whose `-` spelling is one of `known`:
    /// uWSGI ignores them as options (see the module doc).
    pub fn underscore_spellings<'a>(&'a self, known: &[&str]) -> Vec<(&'a Entry, String)> {
        self.entries
            .iter()
            .filter(|e| e.key.contains('_'))
            .filter_map(|e| {
                let dashed = e.key.replace('_', "-");
                known.contains(&dashed.as_str()).then_some((e, dashed))
            })
            .collect()
    }
}

/// Why freezing an idle worker would be unsafe, if it is: with
/// `thunder-lock`, an idle worker holds a process-shared mutex across
/// `epoll_wait`/`accept`, so freezing it stops every other worker from
/// accepting.
pub fn freeze_is_unsafe(ini: &UwsgiIni) -> Option<String> {
    if !ini.flag("thunder-lock") {
        return None;
    }
    let at = ini.last("thunder-lock").map_or(String::new(), |e| e.at());
    Some(format!(
        "{at}: thunder-lock is on: an idle worker frozen while it holds the accept lock \
         would block every other worker; scale down with \"stop\", not \"freeze\""
    ))
}

/// What is missing for adaptive scaling through the master FIFO: uWSGI
/// changes its worker count on `+`/`-` only in cheaper mode, and only the
/// `manual` algorithm leaves the decisions to someone else.
pub fn cheaper_manual_problem(ini: &UwsgiIni) -> Option<String> {
    let mut missing = Vec::new();
    match ini.get("cheaper-algo").map(str::trim) {
        Some("manual") => {}
        Some(other) => missing.push(format!(
            "cheaper-algo = manual (it is {other:?}: uWSGI's own algorithm would fight the daemon)"
        )),
        None => missing.push(
            "cheaper-algo = manual (without it uWSGI's \"spare\" algorithm decides)".to_string(),
        ),
    }
    let cheaper = ini.get("cheaper").map(leading_number);
    if cheaper.is_none_or(|n| n == 0) {
        missing.push("cheaper = N (the fewest workers to keep)".to_string());
    }
    let processes = ini
        .get("processes")
        .or_else(|| ini.get("workers"))
        .map(leading_number);
    match (cheaper, processes) {
        (_, None | Some(0)) => missing.push("processes = N (the most workers)".to_string()),
        (Some(c), Some(p)) if c >= p && c > 0 => missing.push(format!(
            "processes above cheaper (processes = {p}, cheaper = {c})"
        )),
        _ => {}
    }
    if ini.first("master-fifo").is_none() {
        missing.push("master-fifo = /run/APP/fifo (how the daemon asks for + and -)".to_string());
    }
    (!missing.is_empty()).then(|| format!("adaptive scaling needs {}", missing.join(", ")))
}

/// The number at the start of `text`, as C's `strtoul` reads it (uWSGI
/// parses numeric options that way): `"300M"` is 300, `"x"` is 0.
pub fn leading_number(text: &str) -> u64 {
    let t = text.trim_start();
    let digits: String = t.chars().take_while(char::is_ascii_digit).collect();
    digits
        .parse()
        .unwrap_or(if digits.is_empty() { 0 } else { u64::MAX })
}

/// `file.ini:section` → (`file.ini`, `section`); the section defaults to
/// `uwsgi`. A colon followed by a `/` is part of the path.
fn split_spec(spec: &Path) -> (PathBuf, String) {
    let text = spec.to_string_lossy();
    match text.rsplit_once(':') {
        Some((file, section)) if !section.contains('/') => {
            let section = if section.is_empty() { "uwsgi" } else { section };
            (PathBuf::from(file), section.to_string())
        }
        _ => (spec.to_path_buf(), "uwsgi".to_string()),
    }
}

/// An absolute, lexically normalised path: relative ones are taken from
/// `/`, the working directory of a systemd service.
fn absolute(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

/// What one read may still open, read and expand (see [`MAX_FILES`] and
/// the others), and how it opens files.
struct Budget {
    symlinks: Symlinks,
    files: usize,
    bytes: u64,
    entries: usize,
    expansion: usize,
    lookups: usize,
    /// What went past its bound while expanding: the read fails with it.
    over: Option<String>,
}

impl Budget {
    fn new(symlinks: Symlinks) -> Self {
        Self {
            symlinks,
            files: MAX_FILES,
            bytes: MAX_BYTES,
            entries: MAX_ENTRIES,
            expansion: MAX_EXPANSION,
            lookups: MAX_LOOKUPS,
            over: None,
        }
    }

    /// Reads one file: a regular file, within the bounds (see
    /// [`safe_open`]). The error does not name the file: callers do.
    fn read(&mut self, open: &Path) -> io::Result<Vec<u8>> {
        if self.files == 0 {
            return Err(io::Error::other(format!(
                "more than {MAX_FILES} files to read: a loop?"
            )));
        }
        self.files -= 1;
        let cap = self.bytes.min(MAX_FILE);
        let bytes = safe_open::read_regular(open, cap, self.symlinks).map_err(|e| {
            if e.kind() == io::ErrorKind::FileTooLarge && cap < MAX_FILE {
                io::Error::new(
                    e.kind(),
                    format!(
                        "with the files read before it, more than {}",
                        safe_open::size(MAX_BYTES)
                    ),
                )
            } else {
                e
            }
        })?;
        self.bytes -= bytes.len() as u64;
        Ok(bytes)
    }

    /// Takes `n` bytes of expansion; false once past [`MAX_EXPANSION`].
    fn expand(&mut self, n: usize) -> bool {
        match self.expansion.checked_sub(n) {
            Some(left) if self.over.is_none() => {
                self.expansion = left;
                true
            }
            _ => {
                self.over.get_or_insert_with(|| {
                    format!(
                        "magic variables, placeholders and @(file) add more than {}",
                        safe_open::size(MAX_EXPANSION as u64)
                    )
                });
                false
            }
        }
    }

    /// Takes one placeholder look-up `depth` placeholders deep; false
    /// once past [`MAX_LOOKUPS`] or [`MAX_NESTING`].
    fn lookup(&mut self, depth: usize) -> bool {
        match self.lookups.checked_sub(1) {
            Some(_) if depth >= MAX_NESTING => {
                self.over
                    .get_or_insert_with(|| format!("placeholders nest deeper than {MAX_NESTING}"));
                false
            }
            Some(left) if self.over.is_none() => {
                self.lookups = left;
                true
            }
            _ => {
                self.over.get_or_insert_with(|| {
                    format!("placeholders need more than {MAX_LOOKUPS} look-ups")
                });
                false
            }
        }
    }
}

struct Loader<'a> {
    opts: &'a ReadOptions,
    budget: Budget,
    entries: Vec<Entry>,
    files: Vec<PathBuf>,
    notes: BTreeSet<String>,
    /// The last file read, for `ini = :section`.
    last_file: Option<PathBuf>,
    /// The first file loaded as a config (not an include), for `%D` etc.
    first_config: Option<PathBuf>,
}

impl<'a> Loader<'a> {
    fn new(opts: &'a ReadOptions, symlinks: Symlinks) -> Self {
        let entries = opts
            .preset
            .iter()
            .map(|(k, v)| Entry {
                key: k.clone(),
                value: v.clone(),
                file: PathBuf::new(),
                line: 0,
            })
            .collect();
        Self {
            opts,
            budget: Budget::new(symlinks),
            entries,
            files: Vec::new(),
            notes: BTreeSet::new(),
            last_file: None,
            first_config: None,
        }
    }

    fn open_path(&self, host: &Path) -> PathBuf {
        match &self.opts.root {
            Some(root) => root.join(host.strip_prefix("/").unwrap_or(host)),
            None => host.to_path_buf(),
        }
    }

    /// Reads one section of one file; `from` is the including line.
    fn load(
        &mut self,
        path: &Path,
        section: &str,
        text: Option<&str>,
        from: Option<(&Path, usize, usize)>,
    ) -> Result<(), IniError> {
        let host = if path.is_absolute() {
            absolute(path)
        } else {
            if let Some((f, l, _)) = from {
                self.notes.insert(format!(
                    "{}:{l}: relative path {} taken from / (the working directory of a service)",
                    f.display(),
                    path.display()
                ));
            }
            absolute(path)
        };
        let depth = from.map_or(0, |(_, _, d)| d);
        let owned;
        let text = match text {
            Some(t) => t,
            None => {
                owned = self.read_text(&host, from)?;
                &owned
            }
        };
        if from.is_none() && self.first_config.is_none() {
            self.first_config = Some(host.clone());
        }
        self.files.push(host.clone());
        self.last_file = Some(host.clone());
        let magic = Magic::new(&host, path, section, self.first_config.as_deref());
        let mut current = String::new();
        let mut found = false;
        for (n, raw) in text.lines().enumerate() {
            let line_no = n + 1;
            let line = magic.apply(raw, &mut self.notes, &host, line_no, &mut self.budget);
            if let Some(why) = self.budget.over.take() {
                return Err(syntax(&host, line_no, why));
            }
            let line = line.trim_matches(|c| c == ' ' || c == '\t' || c == '\r');
            if line.is_empty() || line.starts_with(';') || line.starts_with('#') {
                continue;
            }
            if let Some(rest) = line.strip_prefix('[') {
                let Some(name) = rest.strip_suffix(']') else {
                    return Err(syntax(
                        &host,
                        line_no,
                        "a section header with no closing ']'".into(),
                    ));
                };
                current = name.to_string();
                continue;
            }
            if current != section {
                continue;
            }
            found = true;
            self.entry(&host, line_no, depth, line)?;
        }
        match from {
            None if !found => Err(IniError::NoSection {
                path: host,
                section: section.to_string(),
            }),
            Some((f, l, _)) if !found => {
                self.notes.insert(format!(
                    "{}:{l}: {} has no [{section}] section: nothing included",
                    f.display(),
                    host.display()
                ));
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// The text of a file to load; an error at the including line when it
    /// is an include (that line is what the operator wrote).
    fn read_text(
        &mut self,
        host: &Path,
        from: Option<(&Path, usize, usize)>,
    ) -> Result<String, IniError> {
        let open = self.open_path(host);
        let bytes = self.budget.read(&open).map_err(|cause| match from {
            Some((f, line, _)) => IniError::Syntax {
                path: f.to_path_buf(),
                line,
                message: format!("failed to read the file included here: {cause}"),
            },
            None => IniError::Read {
                path: host.to_path_buf(),
                cause,
            },
        })?;
        String::from_utf8(bytes).map_err(|e| {
            let line = e.as_bytes()[..e.utf8_error().valid_up_to()]
                .iter()
                .filter(|&&b| b == b'\n')
                .count()
                + 1;
            IniError::Syntax {
                path: host.to_path_buf(),
                line,
                message: "not UTF-8 text".into(),
            }
        })
    }

    /// One `key = value` line of the section being read; follows includes.
    fn entry(
        &mut self,
        host: &Path,
        line_no: usize,
        depth: usize,
        line: &str,
    ) -> Result<(), IniError> {
        let (key, value) = match line.split_once('=') {
            Some((k, v)) => (
                k.trim_end_matches([' ', '\t']),
                v.trim_start_matches([' ', '\t']),
            ),
            None => (line, ""),
        };
        if key.is_empty() {
            return Err(syntax(host, line_no, "no option name before '='".into()));
        }
        if self.budget.entries == 0 {
            return Err(syntax(
                host,
                line_no,
                format!("more than {MAX_ENTRIES} options"),
            ));
        }
        self.budget.entries -= 1;
        self.entries.push(Entry {
            key: key.to_string(),
            value: value.to_string(),
            file: host.to_path_buf(),
            line: line_no,
        });
        if matches!(key, "ini" | "include" | "inherit") {
            self.include(host, line_no, depth, value)?;
        }
        Ok(())
    }

    fn include(
        &mut self,
        host: &Path,
        line: usize,
        depth: usize,
        value: &str,
    ) -> Result<(), IniError> {
        if depth + 1 > MAX_DEPTH {
            return Err(syntax(
                host,
                line,
                format!("includes nest deeper than {MAX_DEPTH}: a loop?"),
            ));
        }
        let (file, section) = split_spec(Path::new(value));
        let file = if value.starts_with(':') || file.as_os_str().is_empty() {
            match &self.last_file {
                Some(f) => f.clone(),
                None => {
                    return Err(syntax(
                        host,
                        line,
                        "a section of the last file read, but none was read yet".into(),
                    ));
                }
            }
        } else {
            file
        };
        let is_ini = file.extension().is_none_or(|e| e == "ini");
        if !is_ini {
            self.notes.insert(format!(
                "{}:{line}: {} is not an ini file: not followed",
                host.display(),
                file.display()
            ));
            return Ok(());
        }
        self.load(&file, &section, None, Some((host, line, depth + 1)))
    }

    fn finish(self) -> Result<UwsgiIni, IniError> {
        let mut notes = self.notes;
        let mut budget = self.budget;
        let raw = self.entries;
        let mut entries = Vec::with_capacity(raw.len());
        for e in &raw {
            let mut stack = Vec::new();
            let value = expand(
                &e.value,
                &raw,
                self.opts,
                &mut notes,
                e,
                &mut stack,
                &mut budget,
            );
            if let Some(why) = budget.over.take() {
                return Err(syntax(&e.file, e.line, why));
            }
            entries.push(Entry { value, ..e.clone() });
        }
        Ok(UwsgiIni {
            entries,
            files: self.files,
            notes: notes.into_iter().collect(),
        })
    }
}

fn syntax(path: &Path, line: usize, message: String) -> IniError {
    IniError::Syntax {
        path: path.to_path_buf(),
        line,
        message,
    }
}

#[cfg(test)]
mod tests;
