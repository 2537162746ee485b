//! Reading state files that someone else may control.
//!
//! A rootless Podman user owns their `containers.json`, and a kind node's
//! files are reached through its `/proc/PID/root`: a FIFO there would
//! block the daemon's only thread on `read`, a huge file would fill its
//! memory. Only regular files are read, opened without blocking, up to a
//! bound.

use std::{
    fs::{File, OpenOptions},
    io::Read,
    os::unix::fs::OpenOptionsExt,
    path::Path,
};

/// Larger than any runtime's state file (a `containers.json` of thousands
/// of containers is a few MiB).
pub const MAX_STATE_FILE: u64 = 16 * 1024 * 1024;

/// The contents of a regular file of at most `MAX_STATE_FILE` bytes.
#[must_use]
pub fn read_state(path: &Path) -> Option<Vec<u8>> {
    let file: File = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .ok()?;
    let meta = file.metadata().ok()?;
    if !meta.is_file() || meta.len() > MAX_STATE_FILE {
        return None;
    }
    let mut contents = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(MAX_STATE_FILE).read_to_end(&mut contents).ok()?;
    Some(contents)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::testdir::TestDir;

    #[test]
    fn regular_files_only() {
        let dir = TestDir::new("files");
        let file = dir.file("state.json", "{}");
        assert_eq!(read_state(&file).as_deref(), Some(&b"{}"[..]));
        assert_eq!(read_state(dir.path()), None);
        assert_eq!(read_state(&dir.path().join("missing")), None);
        // A FIFO nobody writes to: refused at once, not waited on.
        let fifo = dir.path().join("fifo");
        let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        assert_eq!(read_state(&fifo), None);
    }
}
