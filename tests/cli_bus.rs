//! `top --once`, `inspect APP`, `status` and the actions against a
//! stand-in daemon on a private bus: a dbus-daemon of our own, whose
//! address the commands get as DBUS_SYSTEM_BUS_ADDRESS, and an object
//! serving Status and Events with fixture JSON and answering the actions
//! as the daemon does. Skipped where dbus-daemon is not installed.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use tempfile::TempDir;

struct Fake {
    status: String,
    /// Refuse every action as the daemon refuses a caller who is not root.
    deny: bool,
}

impl Fake {
    fn new(status: String) -> Self {
        Self {
            status,
            deny: false,
        }
    }

    /// The daemon's own check (daemon/bus.rs), or what it answers.
    fn act(&self, done: String) -> zbus::fdo::Result<String> {
        if self.deny {
            return Err(zbus::fdo::Error::AccessDenied(
                "only root may change adaptive-workers".into(),
            ));
        }
        Ok(done)
    }
}

#[zbus::interface(name = "org.adaptiveworkers.Daemon1")]
impl Fake {
    async fn status(&self) -> String {
        self.status.clone()
    }

    async fn reload(&self) -> zbus::fdo::Result<String> {
        self.act("reloaded policy: 1 apps".into())
    }

    async fn recycle_worker(&self, pid: u32) -> zbus::fdo::Result<String> {
        let done = self.act(format!("recycling worker {pid} of shop"))?;
        match pid {
            1 => Err(zbus::fdo::Error::Failed(
                "no managed worker has PID 1".into(),
            )),
            _ => Ok(done),
        }
    }

    async fn pause_app(&self, app: &str) -> zbus::fdo::Result<String> {
        self.act(format!("paused {app}"))
    }

    async fn resume_app(&self, app: &str) -> zbus::fdo::Result<String> {
        self.act(format!("resumed {app}"))
    }

    async fn events(&self, max: u32) -> String {
        let all: Vec<serde_json::Value> = (0..3)
            .map(|i| {
                serde_json::json!({
                    "time": 50_000.0 + f64::from(i), "app": "shop", "action": "recycle",
                    "worker_pid": 1000 + i, "reason": format!("private memory {}M is above the soft limit 200M", 201 + i),
                    "mode": "enforce", "outcome": "done"
                })
            })
            .collect();
        let keep = all.len().saturating_sub(max as usize);
        serde_json::to_string(&all[keep..]).unwrap()
    }
}

/// The private bus; killed when dropped.
struct Bus(Child, String, #[allow(dead_code)] TempDir);

impl Drop for Bus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_bus() -> Option<Bus> {
    start_bus_denying(&[])
}

/// A private bus whose policy refuses these members of the daemon's
/// interface to everyone, as the installed system bus policy refuses them
/// to every user but root (packaging/dbus/): a configuration of our own,
/// the session bus's with `<deny>` rules after its `<allow>`s.
fn start_bus_denying(members: &[&str]) -> Option<Bus> {
    let dir = TempDir::new().unwrap();
    let socket = dir.path().join("bus");
    let address = format!("unix:path={}", socket.display());
    let denies: String = members
        .iter()
        .map(|m| {
            format!(
                "    <deny send_interface=\"org.adaptiveworkers.Daemon1\" send_member=\"{m}\"/>\n"
            )
        })
        .collect();
    let config = dir.path().join("bus.conf");
    std::fs::write(
        &config,
        format!(
            r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>{address}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
{denies}  </policy>
</busconfig>
"#
        ),
    )
    .unwrap();
    let child = Command::new("dbus-daemon")
        .args(["--nofork", &format!("--config-file={}", config.display())])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    for _ in 0..100 {
        if socket.exists() {
            return Some(Bus(child, address, dir));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

fn status_json(worker: u32) -> String {
    serde_json::json!({
        "version": "0.1.0", "mode": "enforce",
        "host": {"mem_total": 8u64 << 30, "mem_available": 2u64 << 30, "utilisation": 0.75,
                 "psi_some_avg10": 0.5, "psi_full_avg10": 0.0, "lower_bound": 0.85, "upper_bound": 0.95},
        "apps": [{
            "name": "shop", "unit": "uwsgi-shop.service", "server": "uwsgi", "mode": "enforce",
            "master_pid": null, "soft_limit": 200u64 << 20, "hard_limit": 300u64 << 20,
            "backlog": 0, "backlog_max": 100, "stopped_slots": 0,
            "counters": {"placed": 1, "adopted": 0, "placement_failures": 0, "recycles": 3, "kills": 0,
                         "oom_kills": 0, "grows": 0, "shrinks": 0, "freezes": 0, "thaws": 0},
            "workers": [{"pid": worker, "scope": format!("aw-shop-{worker}.scope"),
                         "private_bytes": 150u64 << 20, "anon_bytes": null, "file_bytes": null,
                         "shmem_bytes": null, "state": "idle", "age_seconds": 75.0,
                         "memory_high_events": 0, "memory_max_events": 0, "oom_kills": 0, "adopted": false}]
        }],
        "problems": []
    })
    .to_string()
}

fn aw(bus: &str, args: &[&str]) -> Output {
    let bin = Path::new(env!("CARGO_BIN_EXE_adaptive-workers"));
    Command::new(bin)
        .args(args)
        .env("DBUS_SYSTEM_BUS_ADDRESS", bus)
        .output()
        .unwrap()
}

#[tokio::test]
async fn top_once_and_inspect_app_through_the_bus() {
    let Some(bus) = start_bus() else {
        eprintln!("no dbus-daemon: skipping");
        return;
    };
    let address = bus.1.clone();
    // This test process stands in for the app's worker.
    let me = std::process::id();
    let _conn = zbus::connection::Builder::address(address.as_str())
        .name("org.adaptiveworkers.Daemon")
        .serve_at("/org/adaptiveworkers/Daemon", Fake::new(status_json(me)))
        .build()
        .await
        .expect("serves on the private bus");

    let a = address.clone();
    let top = tokio::task::spawn_blocking(move || aw(&a, &["top", "--once"]))
        .await
        .unwrap();
    let text = String::from_utf8(top.stdout).unwrap();
    assert!(
        top.status.success(),
        "{}",
        String::from_utf8_lossy(&top.stderr)
    );
    assert!(
        text.contains("host memory [") && text.contains("75.0% of 8G"),
        "{text}"
    );
    assert!(
        text.contains("shop (uwsgi-shop.service, uwsgi, enforce): not running, 1 workers"),
        "{text}"
    );
    assert!(text.contains(&format!("{me}  [")), "{text}");
    assert!(
        text.contains("recycle   shop worker 1002: private memory 203M"),
        "{text}"
    );
    assert!(!text.contains('\x1b'), "no terminal control with --once");

    let a = address.clone();
    let inspect = tokio::task::spawn_blocking(move || aw(&a, &["inspect", "shop", "--json"]))
        .await
        .unwrap();
    assert!(
        inspect.status.success(),
        "{}",
        String::from_utf8_lossy(&inspect.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(json["target"], "shop (uwsgi-shop.service)");
    assert_eq!(json["processes"][0]["pid"], me);
    assert_eq!(json["processes"][0]["role"], "worker");
    assert!(json["processes"][0]["threads"].as_u64().unwrap() >= 1);

    let a = address.clone();
    let none = tokio::task::spawn_blocking(move || aw(&a, &["inspect", "blog"]))
        .await
        .unwrap();
    assert_eq!(none.status.code(), Some(1));
    let err = String::from_utf8(none.stderr).unwrap();
    assert!(
        err.contains("the daemon manages no app \"blog\" (apps: shop)"),
        "{err}"
    );
}

/// The live view in a pseudo-terminal (util-linux `script`): frames are
/// drawn on the alternate screen, a single `q` quits, and the terminal is
/// put back.
#[tokio::test]
async fn live_top_quits_on_q_and_restores_the_terminal() {
    let Some(bus) = start_bus() else {
        return;
    };
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("no script(1): skipping");
        return;
    }
    let address = bus.1.clone();
    let _conn = zbus::connection::Builder::address(address.as_str())
        .name("org.adaptiveworkers.Daemon")
        .serve_at("/org/adaptiveworkers/Daemon", Fake::new(status_json(1)))
        .build()
        .await
        .unwrap();
    let out = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let bin = env!("CARGO_BIN_EXE_adaptive-workers");
        let mut child = Command::new("script")
            .args(["-qfec", &format!("{bin} top --interval 200ms"), "/dev/null"])
            .env("DBUS_SYSTEM_BUS_ADDRESS", &address)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(900));
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"q").unwrap();
        stdin.flush().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while child.try_wait().unwrap().is_none() {
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("top did not quit on q");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("\x1b[?1049h"),
        "entered the alternate screen: {text:?}"
    );
    assert!(
        text.contains("shop\x1b[0m (uwsgi-shop.service"),
        "drew a frame: {text:?}"
    );
    assert!(text.contains("\r\n"), "raw mode lines end in CR LF");
    assert!(
        text.trim_end().ends_with("\x1b[?25h\x1b[?1049l"),
        "restored last: {text:?}"
    );
}

#[tokio::test]
async fn nobody_owning_the_name_is_the_daemon_not_running() {
    let Some(bus) = start_bus() else {
        return;
    };
    let a = bus.1.clone();
    let out = tokio::task::spawn_blocking(move || aw(&a, &["top", "--once"]))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("the daemon is not running"), "{err}");
}

/// The stand-in daemon on the bus at `address`, until the connection drops.
async fn serve(address: &str, fake: Fake) -> zbus::Connection {
    zbus::connection::Builder::address(address)
        .name("org.adaptiveworkers.Daemon")
        .serve_at("/org/adaptiveworkers/Daemon", fake)
        .build()
        .await
        .expect("serves on the private bus")
}

/// Runs the CLI off the async runtime (the stand-in answers on it).
async fn aw_async(bus: &str, args: &[&str]) -> Output {
    let bus = bus.to_owned();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        aw(&bus, &args)
    })
    .await
    .unwrap()
}

/// Every root-only action, and how a refusal names it.
const ACTIONS: [(&[&str], &str); 4] = [
    (&["reload"], "reload the daemon's policy"),
    (&["recycle", "4242"], "recycle workers"),
    (&["pause", "shop"], "pause apps"),
    (&["resume", "shop"], "resume apps"),
];

#[tokio::test]
async fn an_action_the_daemon_refuses_to_a_non_root_caller_is_permission_denied_exit_4() {
    let Some(bus) = start_bus() else {
        return;
    };
    let mut fake = Fake::new(status_json(1));
    fake.deny = true;
    let _conn = serve(&bus.1, fake).await;
    for (args, verb) in ACTIONS {
        let out = aw_async(&bus.1, args).await;
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(4), "{args:?}: {err}");
        assert_eq!(
            err,
            format!(
                "adaptive-workers: permission denied: only root may {verb} (the daemon refused: only root may change adaptive-workers)\n"
            ),
            "{args:?}"
        );
        assert!(out.stdout.is_empty());
    }
}

#[tokio::test]
async fn an_action_the_bus_policy_rejects_is_permission_denied_exit_4() {
    let Some(bus) = start_bus_denying(&["Reload", "RecycleWorker", "PauseApp", "ResumeApp"]) else {
        return;
    };
    let _conn = serve(&bus.1, Fake::new(status_json(1))).await;
    for (args, verb) in ACTIONS {
        let out = aw_async(&bus.1, args).await;
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(4), "{args:?}: {err}");
        // dbus-daemon's own text goes on with the rules it matched and
        // every field of the call: only its first clause is shown.
        assert_eq!(
            err,
            format!(
                "adaptive-workers: permission denied: only root may {verb} (the system bus refused the call: Rejected send message)\n"
            ),
            "{args:?}"
        );
    }
    // Reading is not refused.
    let out = aw_async(&bus.1, &["status"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn an_action_done_exits_0_and_one_refused_for_another_reason_exits_1() {
    let Some(bus) = start_bus() else {
        return;
    };
    let _conn = serve(&bus.1, Fake::new(status_json(1))).await;
    let out = aw_async(&bus.1, &["pause", "shop"]).await;
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "paused shop\n");
    let out = aw_async(&bus.1, &["recycle", "1"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        "adaptive-workers: no managed worker has PID 1\n"
    );
}

#[tokio::test]
async fn an_action_with_no_daemon_exits_1_saying_it_is_not_running() {
    let Some(bus) = start_bus() else {
        return;
    };
    let out = aw_async(&bus.1, &["recycle", "4242"]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("the daemon is not running"), "{err}");
}

#[tokio::test]
async fn status_tells_a_unit_systemd_does_not_know_from_one_not_running() {
    let Some(bus) = start_bus() else {
        return;
    };
    let mut view: serde_json::Value = serde_json::from_str(&status_json(1)).unwrap();
    let mut ghost = view["apps"][0].clone();
    view["apps"][0]["unit_state"] = "inactive".into();
    ghost["name"] = "ghost".into();
    ghost["unit"] = "acc-ghost.service".into();
    ghost["unit_state"] = "not-found".into();
    ghost["workers"] = serde_json::json!([]);
    view["apps"].as_array_mut().unwrap().push(ghost);
    let _conn = serve(&bus.1, Fake::new(view.to_string())).await;

    let out = aw_async(&bus.1, &["status"]).await;
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success());
    assert!(
        text.contains("shop (uwsgi-shop.service, uwsgi, enforce): not running, soft limit"),
        "{text}"
    );
    assert!(
        text.contains("ghost (acc-ghost.service, uwsgi, enforce): unit not found, soft limit"),
        "{text}"
    );
    assert!(
        text.contains("systemd knows no unit acc-ghost.service (LoadState=not-found)"),
        "{text}"
    );

    let out = aw_async(&bus.1, &["status", "--json"]).await;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["apps"][0]["unit_state"], "inactive");
    assert_eq!(json["apps"][1]["unit_state"], "not-found");
}
