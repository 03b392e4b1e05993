//! `inspect` and `top` as commands: errors are one clear line with exit
//! status 1; `inspect PID --json` on a real process.

use std::io::{BufRead, BufReader};
use std::process::{Command as StdCommand, Stdio};

use assert_cmd::Command;

fn aw() -> Command {
    Command::cargo_bin("adaptive-workers").expect("binary")
}

#[test]
fn top_once_without_a_daemon_is_one_line_and_status_1() {
    let out = aw().args(["top", "--once"]).output().unwrap();
    if out.status.success() {
        eprintln!("a daemon answers on this host: nothing to check");
        return;
    }
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("daemon"), "{stderr}");
    assert!(out.stdout.is_empty());
}

#[test]
fn inspect_names_a_missing_pid() {
    let out = aw().args(["inspect", "4294967290"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        "adaptive-workers: no process 4294967290\n"
    );
}

#[test]
fn inspect_json_on_a_real_process() {
    let script = "import threading,os,time\nev=threading.Event()\nthreading.stack_size(512*1024)\n\
                  threading.Thread(target=ev.wait,daemon=True).start()\ntime.sleep(0.2)\n\
                  print(os.getpid(),flush=True)\ntime.sleep(30)\n";
    let Ok(mut child) = StdCommand::new("python3")
        .args(["-c", script])
        .stdout(Stdio::piped())
        .spawn()
    else {
        eprintln!("python3 is not installed: skipping");
        return;
    };
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let pid = line.trim().to_string();
    let out = aw().args(["inspect", &pid, "--json"]).output().unwrap();
    let _ = StdCommand::new("kill").arg(&pid).status();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let stacks = json["processes"][0]["stacks"].as_array().unwrap();
    assert!(
        stacks
            .iter()
            .any(|s| s["reserved_bytes"] == 512 * 1024 && s["main"] == false),
        "{json:#}"
    );
}

#[test]
fn help_texts_have_examples() {
    for cmd in ["inspect", "top"] {
        let out = aw().args([cmd, "--help"]).output().unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(
            text.contains(&format!("Example: adaptive-workers {cmd}")),
            "{text}"
        );
    }
}
