//! The file store's primitives: the directory lock, crash-safe replacement and removal of a
//! file, and record names as file names. Everything here blocks: call it from
//! `tokio::task::spawn_blocking`.
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

/// First pause between two tries of a busy lock; doubles up to [`LOCK_POLL_MAX`].
const LOCK_POLL_MIN: Duration = Duration::from_micros(200);
/// Longest pause between two tries: a freed lock is noticed within this.
const LOCK_POLL_MAX: Duration = Duration::from_millis(5);
/// Longest file name written (most file systems allow 255 bytes; ".json" and slack included).
const MAX_FILE_NAME: usize = 240;

/// An exclusive `flock` on the store's lock file, held until dropped.
///
/// Each guard opens the lock file anew: `flock` locks belong to an open file description, so
/// two guards in one process exclude each other exactly as two processes do. The kernel drops
/// the lock when the descriptor closes, including when the process dies (`kill -9`), so a
/// crashed writer never leaves the store locked. The descriptor is close-on-exec (Rust's
/// default), so jobs the node spawns do not inherit the lock.
pub(super) struct DirLock {
    _file: File,
}

/// Take the exclusive lock on `path` (created if missing), trying until `deadline`.
///
/// `Ok(None)`: still busy at the deadline. The wait polls with `LOCK_NB` rather than blocking
/// in `flock`: a blocked `flock` cannot be abandoned, so a caller that gave up would leave a
/// thread waiting behind a frozen holder (and take the lock long after nobody wanted it).
pub(super) fn lock(path: &Path, deadline: Instant) -> io::Result<Option<DirLock>> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    let mut pause = LOCK_POLL_MIN;
    loop {
        // SAFETY: plain syscall on a descriptor `file` owns for the whole call.
        let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if r == 0 {
            return Ok(Some(DirLock { _file: file }));
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(code) if code == libc::EWOULDBLOCK || code == libc::EAGAIN => {}
            _ => return Err(err),
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(LOCK_POLL_MAX);
    }
}

/// Replace `dir/name` with `bytes`, crash-safely: write a new file in `tmp` (same file system),
/// fsync it, rename it over the target, fsync the target's directory. A reader sees the old
/// content or the new, never a mix; after a crash, the old or the new, plus at most a leftover
/// file in `tmp` that nobody reads.
pub(super) fn replace(tmp: &Path, dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let temp = tmp.join(format!("{}.{}", uuid::Uuid::new_v4().simple(), name));
    let written = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)?;
        f.write_all(bytes)?;
        f.sync_data()?;
        fs::rename(&temp, dir.join(name))
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&temp);
        return Err(e);
    }
    sync_dir(dir)
}

/// Remove `dir/name` durably (fsync the directory); `Ok(false)` if it did not exist.
pub(super) fn remove(dir: &Path, name: &str) -> io::Result<bool> {
    match fs::remove_file(dir.join(name)) {
        Ok(()) => sync_dir(dir).map(|()| true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Create `parent/name` as a directory if missing, durably.
pub(super) fn ensure_dir(parent: &Path, name: &str) -> io::Result<()> {
    match fs::create_dir(parent.join(name)) {
        Ok(()) => sync_dir(parent),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// fsync a directory, so the names created, renamed or removed in it survive a crash.
pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Read a whole file; `Ok(None)` if it does not exist.
pub(super) fn read(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The names in `dir` ending in `.json`, without that suffix; empty if `dir` does not exist.
/// Anything else (a stray file, an editor's backup) is ignored.
pub(super) fn json_stems(dir: &Path) -> io::Result<Vec<String>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut stems = Vec::new();
    for entry in entries {
        let name = entry?.file_name();
        if let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".json")) {
            if !stem.is_empty() && !stem.starts_with('.') {
                stems.push(stem.to_string());
            }
        }
    }
    Ok(stems)
}

/// Remove everything in `tmp`: files left by writers that died mid-write. Call with the lock
/// held (writers create temp files only while holding it, so none of these is in use).
pub(super) fn clear(tmp: &Path) -> io::Result<usize> {
    let mut removed = 0;
    for entry in fs::read_dir(tmp)? {
        let entry = entry?;
        match fs::remove_file(entry.path()) {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(removed)
}

/// A record name (job name, node id) as a file name: ASCII letters, digits, '_', '-' and
/// (except first) '.' stay; every other byte is `%XX`. So "." and ".." cannot occur, no name
/// starts with a dot, and distinct names give distinct file names. `None` if empty or too long.
pub(super) fn encode(name: &str) -> Option<String> {
    let mut out = String::with_capacity(name.len());
    for (i, b) in name.bytes().enumerate() {
        let keep = b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (b == b'.' && i > 0);
        if keep {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    (!out.is_empty() && out.len() <= MAX_FILE_NAME).then_some(out)
}

/// The inverse of [`encode`]; `None` for a name `encode` cannot have produced.
pub(super) fn decode(stem: &str) -> Option<String> {
    let bytes = stem.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = stem.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    let name = String::from_utf8(out).ok()?;
    (encode(&name).as_deref() == Some(stem)).then_some(name)
}

/// Refuse network file systems: their locks and caches do not give what the store relies on
/// (see the module docs of `store::file`). `Err` names the file system.
#[cfg(target_os = "linux")]
pub(super) fn check_local(dir: &Path) -> Result<(), String> {
    use std::os::unix::ffi::OsStrExt;
    const NFS: u64 = 0x6969;
    const SMB: u64 = 0x517B;
    const CIFS: u64 = 0xFF53_4D42;
    const SMB2: u64 = 0xFE53_4D42;
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return Err("the path contains a NUL byte".into());
    };
    // SAFETY: statfs writes only into `st`, which is zeroed and of the right type.
    let st = unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        if libc::statfs(path.as_ptr(), &mut st) != 0 {
            // Not knowing is not a reason to refuse: the directory works, as far as we know.
            return Ok(());
        }
        st
    };
    #[allow(clippy::unnecessary_cast)] // f_type's integer type differs between targets
    let kind = (st.f_type as u64) & 0xFFFF_FFFF;
    match kind {
        NFS => Err("it is on NFS".into()),
        SMB | CIFS | SMB2 => Err("it is on an SMB/CIFS network share".into()),
        _ => Ok(()),
    }
}

#[cfg(not(target_os = "linux"))]
pub(super) fn check_local(_dir: &Path) -> Result<(), String> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_stay_safe() {
        for name in [
            "backup", "a.b", "..", ".", ".hidden", "x/y", "é", "50%", "node-1_x",
        ] {
            let enc = encode(name).unwrap();
            assert!(
                !enc.starts_with('.') && !enc.contains('/'),
                "{name} → {enc}"
            );
            assert_eq!(decode(&enc).as_deref(), Some(name), "{name} → {enc}");
        }
        assert_eq!(encode("backup.daily").unwrap(), "backup.daily");
        assert_eq!(encode(".."), Some("%2E.".into()));
        assert_eq!(encode(""), None);
        assert_eq!(encode(&"é".repeat(100)), None, "too long once encoded");
        // Names encode() never writes do not decode.
        for stem in ["%zz", "%4", "a%2Db", ".x", "a/b"] {
            assert_eq!(decode(stem), None, "{stem}");
        }
    }

    #[test]
    fn a_held_lock_times_out_and_frees_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let held = lock(&path, Instant::now()).unwrap().expect("free lock");
        let start = Instant::now();
        let busy = lock(&path, start + Duration::from_millis(30)).unwrap();
        assert!(busy.is_none(), "a second open file description is excluded");
        assert!(start.elapsed() >= Duration::from_millis(30));
        drop(held);
        assert!(lock(&path, Instant::now()).unwrap().is_some());
    }

    #[test]
    fn replace_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join("tmp");
        fs::create_dir(&tmp).unwrap();
        replace(&tmp, dir.path(), "x.json", b"1").unwrap();
        replace(&tmp, dir.path(), "x.json", b"22").unwrap();
        assert_eq!(fs::read(dir.path().join("x.json")).unwrap(), b"22");
        assert_eq!(fs::read_dir(&tmp).unwrap().count(), 0);
        assert!(remove(dir.path(), "x.json").unwrap());
        assert!(!remove(dir.path(), "x.json").unwrap());
    }
}
