//! Opening files that someone else names.
//!
//! The daemon runs as root, and some paths it opens come from an app: the
//! ini files on its master's command line (which the app can rewrite), the
//! master FIFO in a directory the app can write. Such a path may name a
//! FIFO (a read blocks until someone writes), a device (`/dev/zero` never
//! ends; opening some devices does something: `/dev/watchdog` arms the
//! watchdog), a symlink to one, or a regular file swapped for one of these
//! since it was looked at.
//!
//! So the path is first opened with `O_PATH`, which opens nothing: no
//! driver's open is called, no FIFO waits for a peer. `fstat` on that
//! descriptor says what the path names; only a regular file (or, for the
//! master FIFO, a FIFO) is then opened for reading or writing, through
//! `/proc/self/fd`, which reopens that very inode whatever the path names
//! by then. With [`Symlinks::Refuse`] the first open has `O_NOFOLLOW`, so a
//! symlink is refused as what it is; the real open has `O_NONBLOCK` (a
//! FIFO without a reader fails at once). Reads stop at a cap.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use rustix::fs::{FileType, Mode, OFlags, Stat};

/// The most a file named by someone else may hold (uWSGI ini files are a
/// few KB).
pub const MAX_FILE: u64 = 1 << 20;

/// Whether a symlink in the last component of the path is followed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Symlinks {
    /// For paths an administrator gave (a policy, `import-uwsgi`):
    /// Debian's apps-enabled files are symlinks. Still safe: the target is
    /// checked the same way, and only opened if it is of the right type.
    Follow,
    /// For paths an app gave: `O_NOFOLLOW`, a symlink is refused.
    Refuse,
}

/// Reads the regular file at `path`, at most `cap` bytes (more is an
/// error: "larger than 1 MiB"). Errors do not repeat the path: callers
/// name it.
pub fn read_regular(path: &Path, cap: u64, symlinks: Symlinks) -> io::Result<Vec<u8>> {
    let (file, stat) = open_checked(path, FileType::RegularFile, symlinks, OFlags::RDONLY)?;
    let too_large = || {
        io::Error::new(
            io::ErrorKind::FileTooLarge,
            format!("larger than {}", size(cap)),
        )
    };
    if u64::try_from(stat.st_size).unwrap_or(0) > cap {
        return Err(too_large());
    }
    let mut buf = Vec::with_capacity(usize::try_from(stat.st_size).unwrap_or(0) + 1);
    file.take(cap + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > cap {
        return Err(too_large());
    }
    Ok(buf)
}

/// Opens the FIFO at `path` for writing, without waiting for a reader
/// (none: it fails at once, ENXIO) and without following a symlink;
/// anything but a FIFO is refused before it is opened for writing.
pub fn open_fifo_for_writing(path: &Path) -> io::Result<File> {
    open_checked(path, FileType::Fifo, Symlinks::Refuse, OFlags::WRONLY).map(|(f, _)| f)
}

/// Opens `path` with `access` if it is of type `want` (see the module doc).
fn open_checked(
    path: &Path,
    want: FileType,
    symlinks: Symlinks,
    access: OFlags,
) -> io::Result<(File, Stat)> {
    let mut flags = OFlags::PATH | OFlags::CLOEXEC;
    if symlinks == Symlinks::Refuse {
        flags |= OFlags::NOFOLLOW;
    }
    let handle = rustix::fs::open(path, flags, Mode::empty())?;
    let stat = rustix::fs::fstat(&handle)?;
    check_type(&stat, want)?;
    let access = access | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    let reopen = format!("/proc/self/fd/{}", handle.as_raw_fd());
    let fd: OwnedFd = match rustix::fs::open(reopen.as_str(), access, Mode::empty()) {
        Ok(fd) => fd,
        // No /proc: open the path again, never through a symlink. A
        // device swapped in meanwhile is opened, but refused below.
        Err(rustix::io::Errno::NOENT) if !Path::new("/proc/self/fd").exists() => {
            rustix::fs::open(path, access | OFlags::NOFOLLOW, Mode::empty())?
        }
        Err(e) => return Err(e.into()),
    };
    let opened = rustix::fs::fstat(&fd)?;
    check_type(&opened, want)?;
    if (opened.st_dev, opened.st_ino) != (stat.st_dev, stat.st_ino) {
        return Err(io::Error::other(
            "replaced by another file while it was opened",
        ));
    }
    Ok((File::from(fd), opened))
}

fn check_type(stat: &Stat, want: FileType) -> io::Result<()> {
    let got = FileType::from_raw_mode(stat.st_mode);
    if got == want {
        return Ok(());
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("is {}, not {}", describe(got), describe(want)),
    ))
}

fn describe(t: FileType) -> &'static str {
    match t {
        FileType::RegularFile => "a regular file",
        FileType::Directory => "a directory",
        FileType::Symlink => "a symbolic link",
        FileType::Fifo => "a FIFO",
        FileType::Socket => "a socket",
        FileType::CharacterDevice => "a character device",
        FileType::BlockDevice => "a block device",
        FileType::Unknown => "of an unknown type",
    }
}

/// `1 MiB`, `512 KiB`, `100 bytes`.
pub fn size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} bytes"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;
    use std::time::Duration;

    fn mkfifo(path: &Path) {
        rustix::fs::mkfifoat(rustix::fs::CWD, path, Mode::from_raw_mode(0o600)).unwrap();
    }

    /// Runs `f` on a thread and fails the test if it takes over 5 s (a
    /// FIFO opened for reading would block forever).
    fn within_5s<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(Duration::from_secs(5))
            .expect("did not return within 5 s")
    }

    #[test]
    fn reads_a_regular_file_and_follows_symlinks_only_when_asked() {
        let dir = tempfile::TempDir::new().unwrap();
        let file = dir.path().join("a.ini");
        fs::write(&file, "[uwsgi]\n").unwrap();
        let link = dir.path().join("link.ini");
        symlink(&file, &link).unwrap();
        assert_eq!(
            read_regular(&file, MAX_FILE, Symlinks::Refuse).unwrap(),
            b"[uwsgi]\n"
        );
        assert_eq!(
            read_regular(&link, MAX_FILE, Symlinks::Follow).unwrap(),
            b"[uwsgi]\n"
        );
        let e = read_regular(&link, MAX_FILE, Symlinks::Refuse).unwrap_err();
        assert_eq!(e.to_string(), "is a symbolic link, not a regular file");
    }

    #[test]
    fn a_fifo_is_refused_at_once() {
        let dir = tempfile::TempDir::new().unwrap();
        let fifo = dir.path().join("evil.fifo");
        mkfifo(&fifo);
        for symlinks in [Symlinks::Refuse, Symlinks::Follow] {
            let p = fifo.clone();
            let e = within_5s(move || read_regular(&p, MAX_FILE, symlinks)).unwrap_err();
            assert_eq!(e.to_string(), "is a FIFO, not a regular file");
        }
    }

    #[test]
    fn devices_and_symlinks_to_them_are_refused() {
        let dir = tempfile::TempDir::new().unwrap();
        let link = dir.path().join("zero.ini");
        symlink("/dev/zero", &link).unwrap();
        let e = within_5s(|| read_regular(Path::new("/dev/zero"), MAX_FILE, Symlinks::Refuse))
            .unwrap_err();
        assert_eq!(e.to_string(), "is a character device, not a regular file");
        let l = link.clone();
        let e = within_5s(move || read_regular(&l, MAX_FILE, Symlinks::Refuse)).unwrap_err();
        assert_eq!(e.to_string(), "is a symbolic link, not a regular file");
        // Followed, the target is checked all the same.
        let e = within_5s(move || read_regular(&link, MAX_FILE, Symlinks::Follow)).unwrap_err();
        assert_eq!(e.to_string(), "is a character device, not a regular file");
        let e = read_regular(dir.path(), MAX_FILE, Symlinks::Refuse).unwrap_err();
        assert_eq!(e.to_string(), "is a directory, not a regular file");
    }

    #[test]
    fn a_file_over_the_cap_is_refused() {
        let dir = tempfile::TempDir::new().unwrap();
        let big = dir.path().join("big.ini");
        fs::write(&big, vec![b'#'; MAX_FILE as usize + 1]).unwrap();
        let e = read_regular(&big, MAX_FILE, Symlinks::Refuse).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::FileTooLarge);
        assert_eq!(e.to_string(), "larger than 1 MiB");
        fs::write(&big, vec![b'#'; MAX_FILE as usize]).unwrap();
        assert_eq!(
            read_regular(&big, MAX_FILE, Symlinks::Refuse)
                .unwrap()
                .len(),
            MAX_FILE as usize
        );
        // A file in /proc says it is empty: the cap still holds.
        let e = read_regular(Path::new("/proc/self/maps"), 10, Symlinks::Refuse).unwrap_err();
        assert_eq!(e.to_string(), "larger than 10 bytes");
    }

    #[test]
    fn the_fifo_opener_takes_only_a_fifo() {
        let dir = tempfile::TempDir::new().unwrap();
        let file = dir.path().join("file");
        fs::write(&file, "").unwrap();
        let e = open_fifo_for_writing(&file).unwrap_err();
        assert_eq!(e.to_string(), "is a regular file, not a FIFO");
        let fifo = dir.path().join("fifo");
        mkfifo(&fifo);
        let link = dir.path().join("link");
        symlink(&fifo, &link).unwrap();
        let e = open_fifo_for_writing(&link).unwrap_err();
        assert_eq!(e.to_string(), "is a symbolic link, not a FIFO");
        // No reader: fails at once rather than waiting for one.
        let e = within_5s(move || open_fifo_for_writing(&fifo)).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENXIO), "{e}");
        let e = open_fifo_for_writing(Path::new("/dev/null")).unwrap_err();
        assert_eq!(e.to_string(), "is a character device, not a FIFO");
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(size(1 << 20), "1 MiB");
        assert_eq!(size(4 << 20), "4 MiB");
        assert_eq!(size(512 << 10), "512 KiB");
        assert_eq!(size(1000), "1000 bytes");
    }
}
