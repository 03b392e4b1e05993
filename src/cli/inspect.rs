//! `adaptive-workers inspect PID|APP`: the stacks of a process, or of an
//! app's master and workers, as [`crate::stack_report`] works them out.

use std::fmt::Write as _;
use std::process::ExitCode;

use anyhow::bail;

use crate::paths::HostPaths;
use crate::policy::values::human_size;
use crate::procfs::ProcFs;
pub use crate::stack_report::*;

pub async fn run(target: &str, json: bool) -> anyhow::Result<ExitCode> {
    let procfs = ProcFs::new(&HostPaths::system());
    let report = match target.parse::<u32>() {
        Ok(pid) => inspect_pid(&procfs, pid)?,
        Err(_) => inspect_app(&procfs, target).await?,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    Ok(ExitCode::SUCCESS)
}

/// An app's master and workers, as the daemon knows them.
async fn inspect_app(procfs: &ProcFs, name: &str) -> anyhow::Result<Report> {
    let view = super::client::fetch_status().await?;
    let Some(app) = view.apps.iter().find(|a| a.name == name) else {
        let known: Vec<&str> = view.apps.iter().map(|a| a.name.as_str()).collect();
        bail!(
            "the daemon manages no app {name:?} (apps: {}); give a PID instead",
            if known.is_empty() {
                "none".into()
            } else {
                known.join(", ")
            }
        );
    };
    let mut processes = Vec::new();
    let pids = app.master_pid.map(|m| (m, "master")).into_iter();
    for (pid, role) in pids.chain(app.workers.iter().map(|w| (w.pid, "worker"))) {
        match inspect_process(procfs, pid, role) {
            Ok(p) => processes.push(p),
            Err(e) if e.to_string().contains("is gone") => {}
            Err(e) => return Err(e),
        }
    }
    if processes.is_empty() {
        bail!("app {name:?} has no running processes");
    }
    Ok(finish(format!("{name} ({})", app.unit), processes))
}

/// The report as a table per process, with the recommendations.
pub fn render(r: &Report) -> String {
    let mut out = format!("inspect {}: {} process(es)\n", r.target, r.processes.len());
    for p in &r.processes {
        render_process(&mut out, p);
    }
    if r.processes.len() > 1 && r.total_saves_reserved_bytes > 0 {
        let _ = writeln!(
            out,
            "\nall processes together: the recommendation saves {} of address space",
            human_size(r.total_saves_reserved_bytes)
        );
    }
    out
}

fn render_process(out: &mut String, p: &ProcessReport) {
    let _ = writeln!(
        out,
        "\nPID {} ({}, {}): {}; stacks reserve {}, resident {}, guard {}; default thread stack {}",
        p.pid,
        p.comm,
        p.role,
        plural(p.threads, "thread"),
        human_size(p.reserved_bytes),
        human_size(p.resident_bytes),
        human_size(p.guard_bytes),
        human_size(p.default_stack_bytes)
    );
    let _ = writeln!(
        out,
        "  {:>8}  {:<8} {:>9} {:>9} {:>7}",
        "TID", "STACK", "RESERVED", "RESIDENT", "GUARD"
    );
    for s in &p.stacks {
        let kind = match (s.main, s.default_sized) {
            (true, _) => "main",
            (false, true) => "default",
            (false, false) => "custom",
        };
        let _ = writeln!(
            out,
            "  {:>8}  {:<8} {:>9} {:>9} {:>7}",
            s.tid,
            kind,
            human_size(s.reserved_bytes),
            human_size(s.resident_bytes),
            human_size(s.guard_bytes)
        );
    }
    for s in &p.skipped {
        let _ = writeln!(out, "  {:>8}  skipped: {}", s.tid, s.reason);
    }
    match &p.recommendation {
        Some(rec) => render_recommendation(out, p, rec),
        None => {
            let _ = writeln!(
                out,
                "  no recommendation: no thread with a default-sized stack that could be smaller"
            );
        }
    }
}

fn render_recommendation(out: &mut String, p: &ProcessReport, r: &Recommendation) {
    let _ = writeln!(
        out,
        "  recommendation: {} reserve the default {} stack each (from RLIMIT_STACK); the most any has touched is {}, so {} is enough",
        plural(r.threads, "thread"),
        human_size(p.default_stack_bytes),
        human_size(r.peak_resident_bytes),
        human_size(r.stack_bytes)
    );
    let _ = writeln!(
        out,
        "    (rule: {MARGIN} × the largest resident stack, rounded up to a power of two, at least {})",
        human_size(MIN_STACK)
    );
    if let (Some(kb), Some(saves)) = (
        r.uwsgi_threads_stacksize_kb,
        r.threads_stacksize_saves_bytes,
    ) {
        let _ = writeln!(
            out,
            "    uWSGI ini: threads-stacksize = {kb}   (KB) saves up to {} of address space ({} × {} now, × {} after); only the threads uWSGI makes itself",
            human_size(saves),
            r.threads,
            human_size(p.default_stack_bytes),
            human_size(r.stack_bytes)
        );
    }
    let _ = writeln!(
        out,
        "    service:   LimitSTACK={}   saves {} of address space; glibc sizes every default thread stack from it, it also caps the main thread's stack (so not below {}); restart to apply",
        limit_value(r.limit_stack_bytes),
        human_size(r.limit_stack_saves_bytes),
        human_size(MIN_LIMIT_STACK)
    );
    if r.huge_page_stacks > 0 {
        let _ = writeln!(
            out,
            "    {} of these stacks are backed by transparent huge pages: {} resident however little they touched; a stack under 2M gets no huge page",
            r.huge_page_stacks,
            human_size(r.huge_page_bytes)
        );
    }
    let _ = writeln!(
        out,
        "    resident memory given back: {} (a stack holds only the pages it touched, or a whole huge page)",
        human_size(r.saves_resident_bytes)
    );
}

fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// A size as systemd's `LimitSTACK=` takes it (K, M, G suffixes).
fn limit_value(bytes: u64) -> String {
    crate::policy::values::format_size(bytes)
}

#[cfg(test)]
mod tests;
