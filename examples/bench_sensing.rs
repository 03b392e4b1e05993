//! How long one sensing pass takes: every worker scope's memory files,
//! and the host files. Run with
//! `cargo run --release --example bench_sensing`.
//!
//! The scopes are a fake tree of 1,000 workers in a tempdir (a real one
//! needs a cgroup2 host with 1,000 scopes), so the per-worker figure is
//! parsing plus page-cache reads; kernfs reads on a real host cost a few
//! µs more per file (DESIGN.md measured ≈7 µs for memory.current). The
//! host files and sock_diag are read from this machine. Prints figures,
//! asserts nothing.

use std::fs;
use std::hint::black_box;
use std::time::{Duration, Instant};

use adaptive_workers::backlog::SockDiag;
use adaptive_workers::cgroup::{CgroupError, CgroupFs};
use adaptive_workers::paths::HostPaths;
use adaptive_workers::procfs::ProcFs;

const WORKERS: usize = 1_000;
const PASSES: u32 = 20;
const HOST_READS: u32 = 2_000;

const STAT: &str = "anon 52428800\nfile 10485760\nkernel 1048576\nkernel_stack 65536\n\
pagetables 131072\nsec_pagetables 0\npercpu 0\nsock 4096\nvmalloc 0\nshmem 8192\nzswap 0\n\
zswapped 0\nfile_mapped 2097152\nfile_dirty 12288\nfile_writeback 0\nswapcached 0\n\
anon_thp 2097152\nfile_thp 0\nshmem_thp 0\ninactive_anon 0\nactive_anon 52420608\n\
inactive_file 10485760\nactive_file 0\nunevictable 0\nslab_reclaimable 100000\n\
slab_unreclaimable 200000\nslab 300000\nworkingset_refault_anon 0\n\
workingset_refault_file 0\nworkingset_activate_anon 0\nworkingset_activate_file 0\n\
workingset_restore_anon 0\nworkingset_restore_file 0\nworkingset_nodereclaim 0\n\
pgscan 0\npgsteal 0\npgscan_kswapd 0\npgscan_direct 0\npgsteal_kswapd 0\n\
pgsteal_direct 0\npgfault 12345\npgmajfault 0\npgrefill 0\npgactivate 0\n\
pgdeactivate 0\npglazyfree 0\npglazyfreed 0\nthp_fault_alloc 0\nthp_collapse_alloc 0\n";
const EVENTS: &str = "low 0\nhigh 17\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n";
const PRESSURE: &str = "some avg10=1.50 avg60=0.25 avg300=0.00 total=123456\n\
full avg10=0.50 avg60=0.10 avg300=0.00 total=4567\n";

fn scope(i: usize) -> String {
    format!("/aw.slice/aw-shop.slice/aw-shop-{}.scope", 10_000 + i)
}

fn build_tree(root: &std::path::Path) -> std::io::Result<CgroupFs> {
    let cgroups = CgroupFs::new_unchecked(root);
    for i in 0..WORKERS {
        let dir = cgroups.path(&scope(i));
        fs::create_dir_all(&dir)?;
        fs::write(
            dir.join("memory.current"),
            format!("{}\n", 50_000_000 + i * 4096),
        )?;
        fs::write(dir.join("memory.stat"), STAT)?;
        fs::write(dir.join("memory.events"), EVENTS)?;
        fs::write(dir.join("memory.pressure"), PRESSURE)?;
    }
    Ok(cgroups)
}

/// One pass over every worker; returns the sum of memory.current so the
/// reads cannot be optimised away.
fn pass(cgroups: &CgroupFs, names: &[String]) -> Result<u64, CgroupError> {
    let mut total = 0;
    for cg in names {
        total += cgroups.memory_current(cg)?;
        black_box(cgroups.memory_stat(cg)?);
        black_box(cgroups.memory_events(cg)?);
        black_box(cgroups.memory_pressure(cg)?);
    }
    Ok(total)
}

fn per_op(total: Duration, ops: u32) -> f64 {
    total.as_secs_f64() * 1e6 / f64::from(ops)
}

fn main() -> anyhow::Result<()> {
    let dir = tempfile::TempDir::new()?;
    let cgroups = build_tree(dir.path())?;
    let names: Vec<String> = (0..WORKERS).map(scope).collect();
    pass(&cgroups, &names)?; // warm the page cache

    let start = Instant::now();
    for _ in 0..PASSES {
        black_box(pass(&cgroups, &names)?);
    }
    let elapsed = start.elapsed();
    let pass_us = per_op(elapsed, PASSES);
    println!(
        "worker scopes: {WORKERS} x (memory.current, .stat, .events, .pressure), mean of {PASSES} passes"
    );
    println!("  one pass:   {:>10.0} µs", pass_us);
    println!("  per worker: {:>10.2} µs", pass_us / WORKERS as f64);

    let procfs = ProcFs::new(&HostPaths::system());
    let start = Instant::now();
    for _ in 0..HOST_READS {
        black_box(procfs.meminfo()?);
    }
    let meminfo_us = per_op(start.elapsed(), HOST_READS);
    let start = Instant::now();
    for _ in 0..HOST_READS {
        black_box(procfs.pressure("memory")?);
    }
    let pressure_us = per_op(start.elapsed(), HOST_READS);
    println!("host files (this machine's /proc), mean of {HOST_READS} reads");
    println!("  meminfo:          {meminfo_us:>8.2} µs");
    println!("  pressure/memory:  {pressure_us:>8.2} µs");
    println!("  both:             {:>8.2} µs", meminfo_us + pressure_us);

    match SockDiag::new() {
        Ok(mut diag) => {
            let mut out = Vec::new();
            let start = Instant::now();
            for _ in 0..HOST_READS / 10 {
                diag.listeners_into(&mut out)?;
            }
            let us = per_op(start.elapsed(), HOST_READS / 10);
            println!(
                "sock_diag listeners (TCP v4+v6, unix; {} found): {us:>8.2} µs",
                out.len()
            );
        }
        Err(e) => println!("sock_diag: not measured: {e}"),
    }
    Ok(())
}
