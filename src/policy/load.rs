//! Finding, layering, reading and validating policy files.
//!
//! The global file and the drop-ins are looked up in /usr/lib, /run and
//! /etc (in that order of precedence, lowest first): for the same file
//! name the later directory wins, and a symlink to /dev/null masks the
//! file. A file must be owned by root (or by whoever runs the check) and
//! writable by nobody else: a policy decides which processes get signalled.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use toml::Spanned;

use super::error::{Source, span};
use super::fragments::{AppFile, GenericFrag, GlobalFile, MemoryFrag, UwsgiFrag};
use super::scaling::scaling_policy;
use super::units;
use super::values::{ByteSize, Megabytes, Span, megabytes_to_bytes};
use super::{
    AppPolicy, GenericSettings, GlobalPolicy, MemoryPolicy, MetricsPolicy, Policy, PolicyError,
    PolicyErrors, ServerKind, Signal, UwsgiSettings,
};
use crate::paths::{DROPIN_DIR, GLOBAL_FILE, HostPaths};

/// Loads the policy of the host whose files are under `paths`.
pub fn load(paths: &HostPaths) -> Result<Policy, PolicyErrors> {
    load_from_dirs(&paths.policy_dirs())
}

/// Loads the policy from these directories, lowest precedence first.
pub fn load_from_dirs(dirs: &[PathBuf]) -> Result<Policy, PolicyErrors> {
    let mut errors = Vec::new();
    let global = match effective_file(dirs.iter().map(|d| d.join(GLOBAL_FILE))) {
        Some(path) => read_checked(&path)
            .and_then(|text| parse_global(&path, &text))
            .unwrap_or_else(|e| {
                errors.extend(e);
                GlobalPolicy::default()
            }),
        None => GlobalPolicy::default(),
    };
    let mut apps: Vec<AppPolicy> = Vec::new();
    for (name, path) in dropins(dirs, &mut errors) {
        match read_checked(&path).and_then(|text| parse_app(&name, &path, &text, &global)) {
            Ok(app) => apps.push(app),
            Err(e) => errors.extend(e),
        }
    }
    check_unique_units(&apps, &mut errors);
    if errors.is_empty() {
        Ok(Policy { global, apps })
    } else {
        Err(PolicyErrors(errors))
    }
}

/// The highest-precedence existing candidate, unless it is masked.
fn effective_file(candidates: impl Iterator<Item = PathBuf>) -> Option<PathBuf> {
    let winner = candidates.filter(|p| p.symlink_metadata().is_ok()).last()?;
    (!is_masked(&winner)).then_some(winner)
}

fn is_masked(path: &Path) -> bool {
    let link_to_null = fs::read_link(path).is_ok_and(|t| t == Path::new("/dev/null"));
    let char_device = fs::metadata(path).is_ok_and(|m| m.file_type().is_char_device());
    link_to_null || char_device
}

/// Drop-in names (file stem) and their effective paths, sorted by name.
fn dropins(dirs: &[PathBuf], errors: &mut Vec<PolicyError>) -> BTreeMap<String, PathBuf> {
    let mut found: BTreeMap<String, PathBuf> = BTreeMap::new();
    for dir in dirs.iter().map(|d| d.join(DROPIN_DIR)) {
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                errors.push(file_error(&dir, format!("failed to list directory: {e}")));
                continue;
            }
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(stem) = path
                .extension()
                .filter(|e| *e == "toml")
                .and(path.file_stem())
                .and_then(|s| s.to_str())
            else {
                continue;
            };
            found.insert(stem.to_owned(), path);
        }
    }
    found.retain(|_, path| !is_masked(path));
    found
}

fn file_error(path: &Path, message: impl Into<String>) -> PolicyError {
    Source { path, text: "" }.file_error(message)
}

/// Reads a policy file after checking who may have written it.
fn read_checked(path: &Path) -> Result<String, Vec<PolicyError>> {
    let fail = |m: String| vec![file_error(path, m)];
    let meta = fs::metadata(path).map_err(|e| fail(format!("failed to read: {e}")))?;
    if !meta.is_file() {
        return Err(fail("is not a regular file".into()));
    }
    let euid = rustix::process::geteuid().as_raw();
    if meta.uid() != 0 && meta.uid() != euid {
        return Err(fail(format!(
            "is owned by uid {}, not root: refusing a policy others could have written",
            meta.uid()
        )));
    }
    if meta.mode() & 0o002 != 0 {
        return Err(fail(format!(
            "is writable by every user (mode {:o}): refusing it; run chmod o-w",
            meta.mode() & 0o7777
        )));
    }
    if meta.mode() & 0o020 != 0 && meta.gid() != 0 {
        return Err(fail(format!(
            "is writable by group {} (mode {:o}): refusing it; run chmod g-w",
            meta.gid(),
            meta.mode() & 0o7777
        )));
    }
    let bytes = fs::read(path).map_err(|e| fail(format!("failed to read: {e}")))?;
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let bytes = e.as_bytes();
        let valid = std::str::from_utf8(&bytes[..at]).unwrap_or_default();
        let src = Source { path, text: valid };
        let msg = format!("is not UTF-8 text (byte {:#04x})", bytes[at]);
        vec![src.error_at(Some(at..at), None, msg)]
    })
}

fn deserialize<T: DeserializeOwned>(src: &Source) -> Result<T, Vec<PolicyError>> {
    toml::from_str(src.text).map_err(|e| {
        let message = e.message().trim_end().to_owned();
        vec![src.error_at(e.span(), None, message)]
    })
}

/// Collects validation errors for one file.
pub(super) struct Checker<'a> {
    pub src: Source<'a>,
    pub errors: Vec<PolicyError>,
}

impl Checker<'_> {
    pub fn at<T>(&mut self, v: &Spanned<T>, key: &str, message: String) {
        let e = self.src.error_at(span(v), Some(key), message);
        self.errors.push(e);
    }

    fn absolute_path(&mut self, v: &Option<Spanned<String>>, key: &str) -> Option<PathBuf> {
        let v = v.as_ref()?;
        let path = PathBuf::from(v.get_ref());
        if path.is_absolute() {
            Some(path)
        } else {
            self.at(
                v,
                key,
                format!("{:?} must be an absolute path", v.get_ref()),
            );
            None
        }
    }

    fn signal(&mut self, v: &Option<Spanned<String>>, key: &str) -> Option<Signal> {
        let v = v.as_ref()?;
        let sig = Signal::from_name(v.get_ref());
        if sig.is_none() {
            let allowed: Vec<_> = super::ALLOWED_SIGNALS.iter().map(|(n, _)| *n).collect();
            let msg = format!("{:?} is not one of {}", v.get_ref(), allowed.join(", "));
            self.at(v, key, msg);
        }
        sig
    }

    fn positive(&mut self, v: &Option<Spanned<Span>>, key: &str, default: Span) -> Span {
        match v {
            Some(s) if s.get_ref().0.is_zero() => {
                self.at(s, key, "must be longer than 0".into());
                default
            }
            Some(s) => *s.get_ref(),
            None => default,
        }
    }

    fn finish<T>(self, value: T) -> Result<T, Vec<PolicyError>> {
        if self.errors.is_empty() {
            Ok(value)
        } else {
            Err(self.errors)
        }
    }
}

pub(super) fn value<T: Copy>(v: &Option<Spanned<T>>, default: T) -> T {
    v.as_ref().map_or(default, |s| *s.get_ref())
}

fn parse_global(path: &Path, text: &str) -> Result<GlobalPolicy, Vec<PolicyError>> {
    let src = Source { path, text };
    let file: GlobalFile = deserialize(&src)?;
    let mut c = Checker {
        src,
        errors: Vec::new(),
    };
    let d = GlobalPolicy::default();
    let host = file.host.unwrap_or_default();
    let workers = file.workers.unwrap_or_default();
    let lower = value(&host.lower_bound, d.host.lower_bound);
    let upper = value(&host.upper_bound, d.host.upper_bound);
    if lower >= upper {
        let msg = format!(
            "the lower bound ({:.1}%) must be below the upper bound ({:.1}%)",
            lower.0 * 100.0,
            upper.0 * 100.0
        );
        match (&host.lower_bound, &host.upper_bound) {
            (Some(l), _) => c.at(l, "host.lower_bound", msg),
            (None, Some(u)) => c.at(u, "host.upper_bound", msg),
            (None, None) => unreachable!("the defaults are ordered"),
        }
    }
    let metrics = file.metrics.and_then(|m| m.listen).and_then(|l| {
        if l.get_ref().is_empty() {
            return None;
        }
        match l.get_ref().parse() {
            Ok(listen) => Some(MetricsPolicy { listen }),
            Err(_) => {
                let msg = format!(
                    "{:?} is not an address such as \"127.0.0.1:9464\"",
                    l.get_ref()
                );
                c.at(&l, "metrics.listen", msg);
                None
            }
        }
    });
    let global = GlobalPolicy {
        file: Some(path.to_path_buf()),
        mode: file.mode.unwrap_or(d.mode),
        host: super::HostPolicy {
            lower_bound: lower,
            upper_bound: upper,
            interval: c.positive(&host.interval, "host.interval", d.host.interval),
            psi_stall: value(&host.psi_stall, d.host.psi_stall),
            psi_window: c.positive(&host.psi_window, "host.psi_window", d.host.psi_window),
            cooldown: value(&host.cooldown, d.host.cooldown),
        },
        workers: super::WorkerDefaults {
            interval: c.positive(&workers.interval, "workers.interval", d.workers.interval),
            recycle_deadline: c.positive(
                &workers.recycle_deadline,
                "workers.recycle_deadline",
                d.workers.recycle_deadline,
            ),
            min_lifetime: value(&workers.min_lifetime, d.workers.min_lifetime),
        },
        metrics,
    };
    if global.host.psi_stall.0 > global.host.psi_window.0
        && let Some(s) = &host.psi_stall
    {
        c.at(
            s,
            "host.psi_stall",
            "must not be longer than host.psi_window".into(),
        );
    }
    c.finish(global)
}

fn valid_app_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn unit_problem(unit: &str) -> Option<String> {
    if !units::valid_service_name(unit) {
        return Some(format!("{unit:?} is not a .service unit name"));
    }
    units::forbidden(unit)
}

fn parse_app(
    name: &str,
    path: &Path,
    text: &str,
    global: &GlobalPolicy,
) -> Result<AppPolicy, Vec<PolicyError>> {
    let src = Source { path, text };
    if !valid_app_name(name) {
        return Err(vec![src.file_error(format!(
            "{name:?} is not a usable app name: name the file with letters, digits, '-', '_' or '.'"
        ))]);
    }
    let file: AppFile = deserialize(&src)?;
    let mut c = Checker {
        src,
        errors: Vec::new(),
    };
    let unit = match &file.unit {
        Some(u) => match unit_problem(u.get_ref()) {
            None => u.get_ref().clone(),
            Some(msg) => {
                c.at(u, "unit", msg);
                String::new()
            }
        },
        None => {
            let e = c.src.error_at(
                Some(0..0),
                Some("unit"),
                "missing key \"unit\": the app's .service unit",
            );
            c.errors.push(e);
            String::new()
        }
    };
    let server = match &file.server {
        Some(s) => *s.get_ref(),
        None => {
            let e = c.src.error_at(
                Some(0..0),
                Some("server"),
                "missing key \"server\": one of \"uwsgi\", \"gunicorn\", \"unicorn\", \"generic\"",
            );
            c.errors.push(e);
            ServerKind::Generic
        }
    };
    let memory = memory_policy(&mut c, file.memory.unwrap_or_default(), global);
    let uwsgi = uwsgi_settings(&mut c, file.uwsgi.as_ref(), server);
    let generic = generic_settings(&mut c, file.generic.as_ref(), server);
    let scaling = file.scaling.map(|s| {
        let span = s.span();
        scaling_policy(&mut c, s.into_inner(), span, server)
    });
    c.finish(AppPolicy {
        name: name.to_owned(),
        file: path.to_path_buf(),
        unit,
        server,
        mode: file.mode.unwrap_or(global.mode),
        memory,
        uwsgi,
        generic,
        scaling,
    })
}

/// One limit given by its own name or by uWSGI's (in megabytes), not both.
fn limit(
    c: &mut Checker,
    own: &Option<Spanned<ByteSize>>,
    own_key: &str,
    uwsgi: &Option<Spanned<Megabytes>>,
    uwsgi_key: &str,
) -> Option<(ByteSize, std::ops::Range<usize>)> {
    match (own, uwsgi) {
        (Some(_), Some(u)) => {
            let msg = format!("given twice: as memory.{own_key} and as memory.{uwsgi_key}");
            c.at(u, &format!("memory.{uwsgi_key}"), msg);
            None
        }
        (Some(o), None) => Some((*o.get_ref(), o.span())),
        (None, Some(u)) => match megabytes_to_bytes(u.get_ref().0) {
            Ok(bytes) => Some((ByteSize(bytes), u.span())),
            Err(msg) => {
                c.at(u, &format!("memory.{uwsgi_key}"), msg);
                None
            }
        },
        (None, None) => None,
    }
}

fn memory_policy(c: &mut Checker, m: MemoryFrag, global: &GlobalPolicy) -> MemoryPolicy {
    let soft = limit(
        c,
        &m.soft_limit,
        "soft_limit",
        &m.reload_on_rss,
        "reload-on-rss",
    );
    let hard = limit(
        c,
        &m.hard_limit,
        "hard_limit",
        &m.evil_reload_on_rss,
        "evil-reload-on-rss",
    );
    for (l, key) in [(&soft, "memory.soft_limit"), (&hard, "memory.hard_limit")] {
        if let Some((size, span)) = l
            && size.0 < 1 << 20
        {
            let e = c
                .src
                .error_at(Some(span.clone()), Some(key), "must be at least 1M");
            c.errors.push(e);
        }
    }
    if let (Some((s, _)), Some((h, hard_span))) = (&soft, &hard)
        && h <= s
    {
        let msg = format!(
            "the hard limit ({}) must be above the soft limit ({})",
            super::values::format_size(h.0),
            super::values::format_size(s.0)
        );
        let e = c
            .src
            .error_at(Some(hard_span.clone()), Some("memory.hard_limit"), msg);
        c.errors.push(e);
    }
    MemoryPolicy {
        soft_limit: soft.map(|(s, _)| s),
        hard_limit: hard.map(|(h, _)| h),
        min_lifetime: value(&m.min_lifetime, global.workers.min_lifetime),
    }
}

fn wrong_server<T>(c: &mut Checker, v: &Spanned<T>, table: &str, server: ServerKind) {
    let msg = format!("the [{table}] table is for server = \"{table}\", not {server:?}");
    c.at(v, table, msg.to_lowercase());
}

fn uwsgi_settings(
    c: &mut Checker,
    u: Option<&Spanned<UwsgiFrag>>,
    server: ServerKind,
) -> UwsgiSettings {
    let Some(u) = u else {
        return UwsgiSettings::default();
    };
    if server != ServerKind::Uwsgi {
        wrong_server(c, u, "uwsgi", server);
    }
    let f = u.get_ref();
    UwsgiSettings {
        stats: c.absolute_path(&f.stats, "uwsgi.stats"),
        master_fifo: c.absolute_path(&f.master_fifo, "uwsgi.master_fifo"),
        ini: c.absolute_path(&f.ini, "uwsgi.ini"),
    }
}

fn generic_settings(
    c: &mut Checker,
    g: Option<&Spanned<GenericFrag>>,
    server: ServerKind,
) -> Option<GenericSettings> {
    if let Some(g) = g.filter(|_| server != ServerKind::Generic) {
        wrong_server(c, g, "generic", server);
    }
    if server != ServerKind::Generic {
        return None;
    }
    let f = g.map(|g| g.get_ref());
    let get = |c: &mut Checker, key: &str, pick: fn(&GenericFrag) -> &Option<Spanned<String>>| {
        f.and_then(|f| c.signal(pick(f), key))
    };
    Some(GenericSettings {
        recycle_signal: get(c, "generic.recycle_signal", |f| &f.recycle_signal)
            .unwrap_or(Signal(libc::SIGTERM)),
        grow_signal: get(c, "generic.grow_signal", |f| &f.grow_signal),
        shrink_signal: get(c, "generic.shrink_signal", |f| &f.shrink_signal),
    })
}

fn check_unique_units(apps: &[AppPolicy], errors: &mut Vec<PolicyError>) {
    let mut seen: BTreeMap<&str, &Path> = BTreeMap::new();
    for app in apps {
        if let Some(first) = seen.insert(&app.unit, &app.file) {
            let text = fs::read_to_string(&app.file).unwrap_or_default();
            let src = Source {
                path: &app.file,
                text: &text,
            };
            let span = text.find("unit").map(|s| s..s + 4);
            errors.push(src.error_at(
                span,
                Some("unit"),
                format!("{} already has a policy in {}", app.unit, first.display()),
            ));
        }
    }
}
