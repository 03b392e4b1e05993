//! uWSGI: SIGHUP to one worker makes it finish its request and exit (the
//! master respawns it); the stats socket lists workers with their state;
//! in cheaper mode the master FIFO takes `+` (one more worker) and `-`
//! (one fewer). The stats server speaks raw JSON and closes the socket.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use tokio::io::AsyncReadExt;

use super::{AdapterError, Roster, RosterWorker, ScaleMechanism};

pub const RECYCLE_SIGNAL: i32 = libc::SIGHUP;

/// A stats server that does not answer in this time is treated as broken.
const STATS_TIMEOUT: Duration = Duration::from_millis(500);
/// Stats JSON is a few KB per worker; anything far bigger is garbage.
const STATS_MAX: u64 = 8 << 20;

#[derive(Debug, Deserialize)]
struct Stats {
    #[serde(default)]
    listen_queue: Option<u32>,
    workers: Vec<StatsWorker>,
}

#[derive(Debug, Deserialize)]
struct StatsWorker {
    pid: u32,
    status: String,
}

/// Parses the stats server's JSON into a roster.
pub fn parse_stats(path: &Path, text: &[u8]) -> Result<Roster, AdapterError> {
    let stats: Stats = serde_json::from_slice(text).map_err(|e| AdapterError::Stats {
        path: path.to_path_buf(),
        cause: format!("not uWSGI stats JSON: {e}"),
    })?;
    let mut roster = Roster {
        listen_queue: stats.listen_queue,
        ..Roster::default()
    };
    for w in stats.workers {
        if w.pid == 0 || w.status == "cheap" {
            roster.stopped_slots += 1;
            continue;
        }
        let idle = match w.status.as_str() {
            "idle" => Some(true),
            "busy" => Some(false),
            _ => None,
        };
        roster.workers.push(RosterWorker { pid: w.pid, idle });
    }
    Ok(roster)
}

pub async fn read_stats(path: &Path) -> Result<Roster, AdapterError> {
    let err = |cause: String| AdapterError::Stats {
        path: path.to_path_buf(),
        cause,
    };
    let read = async {
        let stream = tokio::net::UnixStream::connect(path).await?;
        let mut buf = Vec::with_capacity(16 << 10);
        stream.take(STATS_MAX + 1).read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    let buf = tokio::time::timeout(STATS_TIMEOUT, read)
        .await
        .map_err(|_| err(format!("no answer within {STATS_TIMEOUT:?}")))?
        .map_err(|e| err(e.to_string()))?;
    if buf.len() as u64 > STATS_MAX {
        return Err(err(format!("more than {STATS_MAX} bytes")));
    }
    parse_stats(path, &buf)
}

pub fn scale(fifo: Option<&Path>, up: bool) -> ScaleMechanism {
    match fifo {
        Some(path) => ScaleMechanism::Fifo {
            path: PathBuf::from(path),
            command: if up { b'+' } else { b'-' },
        },
        None => ScaleMechanism::Unsupported {
            why: "uWSGI needs uwsgi.master_fifo (and cheaper-algo = manual) to change its worker count",
        },
    }
}

/// Writes `command` `count` times to the master FIFO. Non-blocking: if
/// the master is not reading (not running), this fails at once.
///
/// The app can write the FIFO's directory (uWSGI recreates the FIFO
/// there): a symlink or anything but a FIFO found in its place is refused
/// before it is opened for writing, so root never writes `+` into a file
/// the app chose (see [`safe_open`](crate::policy::safe_open)).
pub fn write_fifo(path: &Path, command: u8, count: u32) -> Result<(), AdapterError> {
    use std::io::Write;
    let err = |cause| AdapterError::Fifo {
        path: path.to_path_buf(),
        cause,
    };
    let mut f = crate::policy::safe_open::open_fifo_for_writing(path).map_err(err)?;
    // uWSGI reads one byte per wake-up of its event loop, so every byte is
    // one command. When the last writer closes it sees EOF and recreates
    // the FIFO: a write racing with that fails and is retried next tick.
    for _ in 0..count {
        f.write_all(&[command]).map_err(err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    // Trimmed from a real uWSGI 2.0.21 stats answer.
    const STATS: &str = r#"{"version":"2.0.21-debian","listen_queue":2,"listen_queue_errors":0,
        "signal_queue":0,"load":0,"pid":100,"uid":33,"gid":33,"cwd":"/",
        "sockets":[{"name":"127.0.0.1:8001","proto":"http","queue":2,"max_queue":100,"shared":0,"can_offload":0}],
        "workers":[
          {"id":1,"pid":101,"accepting":1,"requests":5,"status":"idle","rss":0,"vsz":0,"respawn_count":1},
          {"id":2,"pid":102,"accepting":1,"requests":9,"status":"busy","rss":0,"vsz":0,"respawn_count":1},
          {"id":3,"pid":0,"accepting":0,"requests":0,"status":"cheap","rss":0,"vsz":0,"respawn_count":1},
          {"id":4,"pid":104,"accepting":1,"requests":0,"status":"sig","rss":0,"vsz":0,"respawn_count":2}]}"#;

    #[test]
    fn parses_workers_and_cheap_slots() {
        let r = parse_stats(Path::new("/run/s.sock"), STATS.as_bytes()).unwrap();
        assert_eq!(r.stopped_slots, 1);
        assert_eq!(r.listen_queue, Some(2));
        assert_eq!(r.workers.len(), 3);
        assert_eq!(r.idle(101), Some(true));
        assert_eq!(r.idle(102), Some(false));
        assert_eq!(r.idle(104), None);
        assert!(!r.has(0));
    }

    #[test]
    fn garbage_is_an_error_naming_the_socket() {
        let e = parse_stats(Path::new("/run/s.sock"), b"HTTP/1.0 200 OK\r\n").unwrap_err();
        assert!(e.to_string().contains("/run/s.sock"), "{e}");
        let e = parse_stats(Path::new("/run/s.sock"), br#"{"workers":[{"pid":"x"}]}"#).unwrap_err();
        assert!(e.to_string().contains("not uWSGI stats JSON"), "{e}");
    }

    #[tokio::test]
    async fn reads_from_a_real_socket_and_times_out_on_a_silent_one() {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("stats.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let server = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let (mut s, _) = listener.accept().await.unwrap();
            s.write_all(STATS.as_bytes()).await.unwrap();
            drop(s);
            // Second client: accept and never answer.
            let (_s, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        let r = read_stats(&path).await.unwrap();
        assert_eq!(r.workers.len(), 3);
        let e = read_stats(&path).await.unwrap_err();
        assert!(e.to_string().contains("no answer within"), "{e}");
        server.abort();
    }

    #[test]
    fn fifo_without_reader_fails_at_once() {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("fifo");
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            &path,
            rustix::fs::Mode::from_raw_mode(0o600),
        )
        .unwrap();
        let e = write_fifo(&path, b'+', 1).unwrap_err();
        assert!(e.to_string().contains("master FIFO"), "{e}");
    }

    #[test]
    fn fifo_path_must_be_a_fifo_not_a_file_or_symlink() {
        let dir = tempfile::TempDir::new().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, "untouched").unwrap();
        let e = write_fifo(&file, b'+', 1).unwrap_err().to_string();
        assert!(e.contains(&file.display().to_string()), "{e}");
        assert!(e.contains("is a regular file, not a FIFO"), "{e}");
        // A symlink in its place, even to a real FIFO with a reader.
        let fifo = dir.path().join("fifo");
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
        )
        .unwrap();
        let _reader = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&fifo)
                .unwrap()
        };
        for target in [&file, &fifo] {
            let link = dir.path().join("link");
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(target, &link).unwrap();
            let e = write_fifo(&link, b'+', 1).unwrap_err().to_string();
            assert!(e.contains(&link.display().to_string()), "{e}");
            assert!(e.contains("is a symbolic link, not a FIFO"), "{e}");
        }
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "untouched");
        write_fifo(&fifo, b'+', 1).unwrap();
    }

    #[test]
    fn fifo_commands_reach_the_reader() {
        use std::io::Read;
        use std::os::unix::fs::OpenOptionsExt;
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("fifo");
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            &path,
            rustix::fs::Mode::from_raw_mode(0o600),
        )
        .unwrap();
        let mut reader = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
            .unwrap();
        write_fifo(&path, b'-', 2).unwrap();
        let mut got = Vec::new();
        reader.read_to_end(&mut got).ok();
        assert_eq!(got, b"--");
    }
}
