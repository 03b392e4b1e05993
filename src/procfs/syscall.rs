//! `/proc/PID/syscall`: what a process is blocked in, if anything.
//!
//! This is the generic idle test: a pre-fork worker waiting for its next
//! connection is blocked in accept, epoll, poll or select; a worker
//! serving a request is running, or blocked in read/write/recv on the
//! client or a backend.

use std::path::Path;

use super::{ParseError, ProcError, ProcFs, read_text};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyscallState {
    /// On a CPU or runnable: "running" in the file.
    Running,
    /// Blocked in user space (no system call): "-1 sp pc".
    NotInSyscall,
    /// Blocked in this system call, with its first argument.
    Blocked { nr: i64, arg0: u64 },
}

/// x86_64 numbers of the calls a worker waits for connections in.
const WAITING_FOR_CONNECTIONS: [i64; 9] = [
    43,  // accept
    288, // accept4
    232, // epoll_wait
    281, // epoll_pwait
    441, // epoll_pwait2
    7,   // poll
    271, // ppoll
    23,  // select
    270, // pselect6
];

impl SyscallState {
    /// Waiting for a connection (or any other event on a polled fd).
    pub fn is_waiting(self) -> bool {
        match self {
            SyscallState::Blocked { nr, .. } => {
                cfg!(target_arch = "x86_64") && WAITING_FOR_CONNECTIONS.contains(&nr)
            }
            _ => false,
        }
    }
}

pub fn parse_syscall(path: &Path, text: &str) -> Result<SyscallState, ParseError> {
    let mut fields = text.split_whitespace();
    let first = fields
        .next()
        .ok_or_else(|| ParseError::new(path, "empty"))?;
    if first == "running" {
        return Ok(SyscallState::Running);
    }
    let nr: i64 = first
        .parse()
        .map_err(|_| ParseError::new(path, format!("{first:?} is not a system call number")))?;
    if nr < 0 {
        return Ok(SyscallState::NotInSyscall);
    }
    let arg0 = fields
        .next()
        .and_then(|a| u64::from_str_radix(a.trim_start_matches("0x"), 16).ok())
        .ok_or_else(|| ParseError::new(path, "no first argument"))?;
    Ok(SyscallState::Blocked { nr, arg0 })
}

impl ProcFs {
    /// Reading another user's process needs ptrace access (the daemon has
    /// CAP_SYS_PTRACE for it).
    pub fn pid_syscall(&self, pid: u32) -> Result<SyscallState, ProcError> {
        let dir = self.pid_dir(pid);
        let path = dir.join("syscall");
        let text = read_text(&path, Some(&dir))?;
        Ok(parse_syscall(&path, &text)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "/proc/1/syscall";

    #[test]
    fn parses_the_three_forms() {
        let p = Path::new(P);
        assert_eq!(
            parse_syscall(p, "running\n").unwrap(),
            SyscallState::Running
        );
        assert_eq!(
            parse_syscall(p, "-1 0x7ffd1c2e8a38 0x7f5a\n").unwrap(),
            SyscallState::NotInSyscall
        );
        let s = parse_syscall(p, "232 0x4 0x7ffc 0x1 0xffffffff 0x0 0x0 0x7ffc 0x7f5a\n").unwrap();
        assert_eq!(s, SyscallState::Blocked { nr: 232, arg0: 4 });
        assert!(s.is_waiting());
        let read = parse_syscall(p, "0 0x5 0x7ffc 0x1000 0x0 0x0 0x0 0x7ffc 0x7f5a\n").unwrap();
        assert!(!read.is_waiting());
    }

    #[test]
    fn garbage_is_an_error_naming_the_file() {
        let e = parse_syscall(Path::new(P), "bogus 1 2\n").unwrap_err();
        assert!(e.to_string().contains(P), "{e}");
        assert!(parse_syscall(Path::new(P), "").is_err());
        assert!(parse_syscall(Path::new(P), "232\n").is_err());
    }

    #[test]
    fn a_process_blocked_in_poll_is_waiting() {
        // `sleep` blocks in clock_nanosleep: not waiting for connections.
        let mut sleeper = std::process::Command::new("sleep")
            .arg("10")
            .spawn()
            .unwrap();
        let procfs = ProcFs::at("/proc");
        let mut state = procfs.pid_syscall(sleeper.id()).unwrap();
        for _ in 0..50 {
            if matches!(state, SyscallState::Blocked { .. }) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
            state = procfs.pid_syscall(sleeper.id()).unwrap();
        }
        assert!(matches!(state, SyscallState::Blocked { .. }), "{state:?}");
        assert!(!state.is_waiting());
        sleeper.kill().unwrap();
        sleeper.wait().unwrap();
        // python3 blocked in select() on a listening socket: waiting.
        let mut server = std::process::Command::new("python3")
            .args(["-c", "import socket,select; s=socket.socket(); s.bind(('127.0.0.1',0)); s.listen(); select.select([s],[],[])"])
            .spawn()
            .unwrap();
        let mut waiting = false;
        for _ in 0..100 {
            if procfs
                .pid_syscall(server.id())
                .is_ok_and(|s| s.is_waiting())
            {
                waiting = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        server.kill().unwrap();
        server.wait().unwrap();
        assert!(waiting, "python3 in select() was never seen waiting");
    }
}
