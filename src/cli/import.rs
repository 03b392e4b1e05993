//! `adaptive-workers import-uwsgi`: a policy from a uWSGI ini file.
//!
//! The mapping is a pure function ([`import`]) from what was read to the
//! policy text and notes; `run` only reads, prints and writes. Every policy
//! made here is loaded back through the policy loader before it is shown,
//! so the output is always one the daemon accepts.

mod debian;
#[cfg(test)]
mod tests;
mod unit;

use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::net::SocketAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, anyhow, bail};

use crate::paths::{DROPIN_DIR, HostPaths};
use crate::policy::uwsgi_ini::{self, Entry, ReadOptions, UwsgiIni, leading_number};

/// Options that keep working in uWSGI and have no policy key, and why.
const NOT_MAPPED: [(&str, &str); 12] = [
    (
        "cheaper-rss-limit-soft",
        "uWSGI stops spawning workers above this total RSS of all workers (bytes); the daemon's counterpart is host-wide: lower_bound/upper_bound in adaptive-workers.toml",
    ),
    (
        "cheaper-rss-limit-hard",
        "uWSGI stops workers above this total RSS of all workers (bytes); the daemon's counterpart is host-wide: lower_bound/upper_bound in adaptive-workers.toml",
    ),
    (
        "reload-on-as",
        "address space (VSZ) is not memory in use: thread stacks alone reserve 8 MiB each (see `adaptive-workers inspect`); the daemon limits private memory",
    ),
    (
        "evil-reload-on-as",
        "address space (VSZ) is not memory in use; the daemon limits private memory",
    ),
    (
        "limit-as",
        "an RLIMIT_AS on each process; uWSGI keeps enforcing it",
    ),
    (
        "harakiri",
        "a request timeout, not a memory limit; uWSGI keeps enforcing it",
    ),
    (
        "max-requests",
        "recycling after N requests stays with uWSGI",
    ),
    (
        "max-worker-lifetime",
        "recycling after a time stays with uWSGI",
    ),
    ("reload-on-rss-check", "no counterpart"),
    (
        "cheaper-overload",
        "for uWSGI's own cheaper algorithms; the daemon decides from the listen backlog",
    ),
    (
        "cheaper-busyness-max",
        "for uWSGI's busyness algorithm; the daemon decides from the listen backlog",
    ),
    (
        "cheaper-busyness-min",
        "for uWSGI's busyness algorithm; the daemon decides from the listen backlog",
    ),
];

/// Options whose `_` spelling uWSGI would ignore, worth pointing out.
const KNOWN: [&str; 14] = [
    "reload-on-rss",
    "evil-reload-on-rss",
    "min-worker-lifetime",
    "master-fifo",
    "cheaper-algo",
    "cheaper-initial",
    "cheaper-step",
    "thunder-lock",
    "http-socket",
    "uwsgi-socket",
    "shared-socket",
    "threads-stacksize",
    "max-requests",
    "reload-on-as",
];

const SOCKET_KEYS: [&str; 4] = ["socket", "uwsgi-socket", "http-socket", "shared-socket"];

/// What `import-uwsgi` was asked.
#[derive(Clone, Debug)]
pub struct Args {
    pub ini: PathBuf,
    pub section: Option<String>,
    pub unit: Option<String>,
    pub name: Option<String>,
    pub write: bool,
    pub force: bool,
    pub root: PathBuf,
}

/// A policy made from an ini file.
#[derive(Clone, Debug, PartialEq)]
pub struct Imported {
    pub name: String,
    pub unit: String,
    /// The drop-in's text, header comment included.
    pub policy: String,
    /// Everything the operator should know, one line (or block) each.
    pub notes: Vec<String>,
    /// The unit that runs the app as the daemon expects it (shown in the
    /// notes), unless the policy names a template's instance.
    pub unit_file: Option<String>,
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let paths = HostPaths::new(&args.root);
    let imported = import(&paths, args)?;
    check_loads(&imported)?;
    print!("{}", imported.policy);
    for note in &imported.notes {
        eprintln!("note: {note}");
    }
    if args.write {
        let path = write_dropin(&paths, &imported, args.force)?;
        eprintln!("wrote {}", path.display());
        eprintln!(
            "next: adaptive-workers check{} && systemctl reload adaptive-workers",
            if paths.is_system() {
                String::new()
            } else {
                format!(" --root {}", paths.root().display())
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads the ini (with Debian's default.ini when it is laid out as
/// Debian's) and maps it.
pub fn import(paths: &HostPaths, args: &Args) -> anyhow::Result<Imported> {
    let host = host_path(paths, &args.ini)?;
    if !paths.is_system() && paths.resolve(&host).symlink_metadata().is_err() {
        bail!(
            "{} is not there (under --root {})",
            host.display(),
            paths.root().display()
        );
    }
    let name = match &args.name {
        Some(n) => n.clone(),
        None => host
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
    };
    if !valid_name(&name) {
        bail!("{name:?} cannot name an app: give --name with letters, digits, '-', '_' or '.'");
    }
    let layout = debian::layout(paths, &host, &name);
    let section = args.section.clone().unwrap_or_else(|| "uwsgi".into());
    let spec = PathBuf::from(format!("{}:{section}", host.display()));
    let opts = ReadOptions {
        root: (!paths.is_system()).then(|| paths.root().to_path_buf()),
        ..layout
            .as_ref()
            .map(|l| l.read_options())
            .unwrap_or_default()
    };
    let ini = UwsgiIni::read_with(&spec, &opts)?;
    let mut notes: Vec<String> = Vec::new();
    let unit = match (&args.unit, &layout) {
        (Some(u), _) => u.clone(),
        (None, Some(l)) => {
            notes.extend(l.unit_notes(&ini));
            l.unit()
        }
        (None, None) => {
            notes.push(format!(
                "no --unit given: the policy names {name}.service; it must run this ini with the \
                 uWSGI master as its main process (uWSGI in the foreground, no daemonize)"
            ));
            format!("{name}.service")
        }
    };
    if let Some(l) = &layout {
        notes.extend(l.read_notes());
    }
    notes.extend(ini.notes().iter().cloned());
    let mut policy = header(&name, &host, &section, &ini);
    let _ = writeln!(policy, "unit = {}", quote(&unit));
    let _ = writeln!(policy, "server = \"uwsgi\"");
    policy += &memory(&ini, &mut notes);
    // With the unit the notes suggest, the app runs from apps-available.
    let runs_from = match (&args.unit, &layout) {
        (None, Some(l)) => l.runs_from(),
        _ => host.clone(),
    };
    policy += &uwsgi_table(&ini, &runs_from, &section, &mut notes);
    policy += &scaling(&ini, &mut notes);
    general_notes(&ini, &mut notes);
    let unit_file = (!unit.contains('@')).then(|| {
        match &layout {
            Some(l) => l.unit_spec(&ini, &unit),
            None => unit::UnitSpec::from_ini(&name, &unit, &ini, vec![runs_from.clone()]),
        }
        .render()
    });
    // Debian's layout without --unit: the notes above show it already.
    if let Some(text) = &unit_file
        && (layout.is_none() || args.unit.is_some())
    {
        notes.push(format!(
            "a unit that runs this ini as adaptive-workers expects (compare it with yours, or create /etc/systemd/system/{unit}):\n{}",
            indent(text).trim_end()
        ));
    }
    Ok(Imported {
        name,
        unit,
        policy,
        notes,
        unit_file,
    })
}

/// Text shown inside a note: two spaces before every line but empty ones.
fn indent(text: &str) -> String {
    text.lines()
        .map(|l| {
            if l.is_empty() {
                "\n".to_owned()
            } else {
                format!("  {l}\n")
            }
        })
        .collect()
}

/// The ini's path on the host: made absolute from the current directory
/// when relative, and taken apart from `--root`.
fn host_path(paths: &HostPaths, ini: &Path) -> anyhow::Result<PathBuf> {
    let abs =
        std::path::absolute(ini).with_context(|| format!("failed to resolve {}", ini.display()))?;
    if paths.is_system() {
        return Ok(abs);
    }
    // A path given inside the root tree is turned back into a host path.
    Ok(match abs.strip_prefix(paths.root()) {
        Ok(inside) => Path::new("/").join(inside),
        Err(_) => abs,
    })
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn quote(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn header(name: &str, host: &Path, section: &str, ini: &UwsgiIni) -> String {
    let mut h = format!(
        "# adaptive-workers policy for {name:?}, imported from {} [{section}]\n",
        host.display()
    );
    let others: Vec<String> = ini
        .files()
        .iter()
        .filter(|f| f.as_path() != host)
        .map(|f| f.display().to_string())
        .collect();
    if !others.is_empty() {
        let _ = writeln!(h, "# (also read: {})", others.join(", "));
    }
    h += "# by `adaptive-workers import-uwsgi`. Review it, then run\n";
    h += "# `adaptive-workers check` and `systemctl reload adaptive-workers`.\n\n";
    h
}

/// A number-valued option: its last value, read as uWSGI reads it, with a
/// note when uWSGI would read it differently from what it looks like.
fn number(ini: &UwsgiIni, key: &str, notes: &mut Vec<String>) -> Option<(u64, Entry)> {
    let e = ini.last(key)?.clone();
    let n = leading_number(&e.value);
    let plain = e.value.trim().chars().all(|c| c.is_ascii_digit()) && !e.value.trim().is_empty();
    if !plain {
        notes.push(format!(
            "{}: {:?} is read by uWSGI as {n} (it takes the leading digits only)",
            e.at(),
            e.value
        ));
    }
    Some((n, e))
}

fn where_from(e: &Entry) -> String {
    let file = e
        .file
        .file_name()
        .map_or(String::new(), |f| f.to_string_lossy().into_owned());
    format!("{} = {}, {file}:{}", e.key, e.value, e.line)
}

fn memory(ini: &UwsgiIni, notes: &mut Vec<String>) -> String {
    let mut t = String::from("\n[memory]\n");
    let soft = number(ini, "reload-on-rss", notes).filter(|(n, e)| {
        if *n == 0 {
            notes.push(format!(
                "{}: 0 turns reload-on-rss off: no soft limit",
                e.at()
            ));
        }
        *n > 0
    });
    let hard = number(ini, "evil-reload-on-rss", notes).filter(|(n, e)| {
        if *n == 0 {
            notes.push(format!(
                "{}: 0 turns evil-reload-on-rss off: no hard limit",
                e.at()
            ));
        }
        *n > 0
    });
    let soft = match (soft, &hard) {
        (Some((s, se)), Some((h, he))) if *h <= s => {
            notes.push(format!(
                "{} is not above {}: uWSGI's brutal reload comes first, so the soft limit would never act; only the hard limit is imported",
                he.at(),
                se.at()
            ));
            None
        }
        (s, _) => s,
    };
    if soft.is_some() || hard.is_some() {
        notes.push(
            "uWSGI's reload-on-rss and evil-reload-on-rss count RSS, shared pages included, so they fire before the daemon's limits on private memory: once the policy runs, remove them from the ini (or raise them) and let the daemon decide".into(),
        );
    }
    for (limit, key, what) in [
        (&soft, "soft_limit", "recycled gracefully"),
        (&hard, "hard_limit", "the kernel's MemoryMax"),
    ] {
        match limit {
            Some((n, e)) => {
                let _ = writeln!(
                    t,
                    "# {} (MB); private memory past it: {what}",
                    where_from(e)
                );
                let _ = writeln!(t, "{key} = {}", quote(&format!("{n}M")));
            }
            None => {
                let _ = writeln!(t, "# {key} = \"300M\"   # not set in the ini");
            }
        }
    }
    match number(ini, "min-worker-lifetime", notes) {
        Some((n, e)) => {
            let _ = writeln!(t, "# {} (seconds)", where_from(&e));
            let _ = writeln!(t, "min_lifetime = {}", quote(&format!("{n}s")));
        }
        None => t += "# min_lifetime: the default, 10s, as uWSGI's min-worker-lifetime\n",
    }
    for (e, dashed) in ini.underscore_spellings(&KNOWN) {
        notes.push(format!(
            "{}: uWSGI matches option names exactly and ignores {:?} as an option (it becomes a placeholder); if you meant {dashed}, fix the ini: not imported",
            e.at(),
            e.key
        ));
    }
    t
}

fn uwsgi_table(ini: &UwsgiIni, host: &Path, section: &str, notes: &mut Vec<String>) -> String {
    let mut t = String::from("\n[uwsgi]\n");
    if section == "uwsgi" {
        let _ = writeln!(t, "ini = {}", quote(&host.to_string_lossy()));
    } else {
        notes.push(format!(
            "the app is in section [{section}]: uwsgi.ini is left out, since the daemon reads the [uwsgi] section of it"
        ));
    }
    let stats = ini
        .entries()
        .iter()
        .rev()
        .find(|e| e.key == "stats" || e.key == "stats-server");
    match stats {
        Some(e) if e.value.starts_with('/') && ini.flag("stats-http") => notes.push(format!(
            "{}: stats-http makes the stats server speak HTTP; the daemon reads its raw JSON: drop stats-http to use it",
            e.at()
        )),
        Some(e) if e.value.starts_with('/') => {
            let _ = writeln!(t, "# {}", where_from(e));
            let _ = writeln!(t, "stats = {}", quote(&e.value));
        }
        Some(e) if e.value.contains(':') && !e.value.starts_with('@') => notes.push(format!(
            "{}: {:?} is a TCP stats address and cannot be used: the daemon reads the stats server over a unix socket; use e.g. stats = /run/APP/stats.sock",
            e.at(),
            e.value
        )),
        Some(e) => notes.push(format!(
            "{}: {:?} is not an absolute unix socket path: not imported",
            e.at(),
            e.value
        )),
        None => notes.push(
            "no stats socket: without it the daemon takes every child of the master for a worker (mules and spoolers too) and cannot tell idle workers; add stats = /run/APP/stats.sock"
                .into(),
        ),
    }
    match ini.first("master-fifo") {
        Some(e) if e.value.starts_with('/') => {
            let _ = writeln!(
                t,
                "# {} (the first one: uWSGI starts with it)",
                where_from(e)
            );
            let _ = writeln!(t, "master_fifo = {}", quote(&e.value));
        }
        Some(e) => notes.push(format!(
            "{}: {:?} is not an absolute path: not imported",
            e.at(),
            e.value
        )),
        None => {}
    }
    t
}

/// The most workers: `processes` and `workers` set the same number, the
/// last one given wins.
fn processes(ini: &UwsgiIni) -> Option<(u64, &Entry)> {
    ini.entries()
        .iter()
        .rev()
        .find(|e| e.key == "processes" || e.key == "workers")
        .map(|e| (leading_number(&e.value), e))
}

fn scaling(ini: &UwsgiIni, notes: &mut Vec<String>) -> String {
    let cheaper = ini.last("cheaper").map(|e| (leading_number(&e.value), e));
    let Some((min, min_e)) = cheaper.filter(|(n, _)| *n > 0) else {
        if let Some((n, _)) = processes(ini) {
            notes.push(format!(
                "a fixed count of {n} workers: for adaptive scaling, run uWSGI in cheaper mode (cheaper-algo = manual, cheaper = MIN, master-fifo = /run/APP/fifo) and import again"
            ));
        }
        return String::new();
    };
    let Some((max, max_e)) = processes(ini).filter(|(n, _)| *n > 0) else {
        notes.push(format!(
            "{}: cheaper mode without processes: no [scaling]",
            min_e.at()
        ));
        return String::new();
    };
    let problem = uwsgi_ini::cheaper_manual_problem(ini);
    let on = problem.is_none();
    let c = if on { "" } else { "# " };
    let mut t = String::from("\n");
    if let Some(p) = &problem {
        notes.push(format!(
            "{p}: the [scaling] table is written commented out; enable it once the ini has them"
        ));
        t += "# Adaptive scaling, off until the ini has what it needs (see the notes):\n";
    }
    let _ = writeln!(t, "{c}[scaling]");
    let _ = writeln!(t, "# {}; {}", where_from(min_e), where_from(max_e));
    let _ = writeln!(t, "{c}min_workers = {min}");
    let _ = writeln!(t, "{c}max_workers = {max}");
    if let Some((step, e)) = number(ini, "cheaper-step", notes).filter(|(n, _)| *n > 0) {
        let _ = writeln!(t, "# {}", where_from(&e));
        let _ = writeln!(t, "{c}step_up = {step}");
    }
    if let Some(e) = ini.last("cheaper-initial") {
        notes.push(format!(
            "{}: uWSGI starts {} workers; the daemon takes over from whatever runs (no policy key)",
            e.at(),
            e.value
        ));
    }
    match uwsgi_ini::freeze_is_unsafe(ini) {
        Some(why) => {
            notes.push(why);
            let _ = writeln!(
                t,
                "# thunder-lock is on: freezing an idle worker would block the others"
            );
            let _ = writeln!(t, "{c}scale_down = \"stop\"");
        }
        None => t += "# scale_down = \"freeze\"   # possible: no thunder-lock\n",
    }
    let sockets = sockets(ini, notes);
    if !sockets.is_empty() {
        let list: Vec<String> = sockets.iter().map(|s| quote(s)).collect();
        let _ = writeln!(t, "{c}sockets = [{}]", list.join(", "));
    }
    t
}

/// Listening sockets the daemon can watch, from the socket options.
fn sockets(ini: &UwsgiIni, notes: &mut Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for e in ini
        .entries()
        .iter()
        .filter(|e| SOCKET_KEYS.contains(&e.key.as_str()))
    {
        let v = e.value.split(',').next().unwrap_or("").trim();
        let spec = if v.starts_with('/') {
            Some(v.to_string())
        } else if let Some(port) = v.strip_prefix(':') {
            Some(format!("0.0.0.0:{port}")).filter(|a| a.parse::<SocketAddr>().is_ok())
        } else {
            v.parse::<SocketAddr>().ok().map(|a| a.to_string())
        };
        match spec {
            Some(s) if !out.contains(&s) => out.push(s),
            Some(_) => {}
            None => notes.push(format!(
                "{}: {v:?} is neither an IP address with a port nor an absolute unix socket path: not watched (an abstract socket, a host name or an inherited fd)",
                e.at()
            )),
        }
    }
    out
}

fn general_notes(ini: &UwsgiIni, notes: &mut Vec<String>) {
    if !ini.flag("master") {
        notes.push(
            "master is not on: without uWSGI's master there is no pre-fork master to manage; add master = true"
                .into(),
        );
    }
    if let Some(e) = ini.last("daemonize").or_else(|| ini.last("daemonize2")) {
        notes.push(format!(
            "{}: uWSGI detaches from its service, so the service's main PID is not the master: run it in the foreground",
            e.at()
        ));
    }
    for (key, why) in NOT_MAPPED {
        if let Some(e) = ini.last(key) {
            notes.push(format!("{}: not mapped: {why}", e.at()));
        }
    }
}

/// Loads the policy through the real loader, from a private directory:
/// the output must always be one the daemon accepts.
fn check_loads(imported: &Imported) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!(
        "adaptive-workers-import-{}-{}",
        std::process::id(),
        crate::wire::now_epoch() as u64
    ));
    let dropins = dir.join(DROPIN_DIR);
    let result = (|| {
        fs::create_dir_all(&dropins)?;
        let file = dropins.join(format!("{}.toml", imported.name));
        fs::write(&file, &imported.policy)?;
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644))?;
        Ok::<_, std::io::Error>(crate::policy::load_from_dirs(std::slice::from_ref(&dir)))
    })();
    let _ = fs::remove_dir_all(&dir);
    match result.context("failed to check the imported policy in a temporary directory")? {
        Ok(_) => Ok(()),
        Err(e) => Err(anyhow!(
            "the imported policy does not load (a bug in import-uwsgi): {e}"
        )),
    }
}

/// Writes the drop-in (mode 0644), refusing to overwrite without `force`.
fn write_dropin(paths: &HostPaths, imported: &Imported, force: bool) -> anyhow::Result<PathBuf> {
    let dir = paths.resolve("/etc/adaptive-workers").join(DROPIN_DIR);
    fs::create_dir_all(&dir).with_context(|| format!("failed to create {}", dir.display()))?;
    let path = dir.join(format!("{}.toml", imported.name));
    if path.symlink_metadata().is_ok() && !force {
        bail!(
            "{} exists: not overwriting it without --force",
            path.display()
        );
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(&path)
        .with_context(|| format!("failed to write {}", path.display()))?;
    file.write_all(imported.policy.as_bytes())
        .with_context(|| format!("failed to write {}", path.display()))?;
    // The mode given to open is masked by the umask; the loader wants
    // exactly "nobody else may write".
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644))
        .with_context(|| format!("failed to chmod {}", path.display()))?;
    Ok(path)
}
