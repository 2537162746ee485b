//! A BPF map's memory mapped into this process (a ring buffer's position
//! pages, an mmapable array), unmapped on drop. Hand-written: aya maps
//! neither; this is one `mmap` and its `munmap`.

use std::{
    os::fd::{AsRawFd, BorrowedFd},
    ptr::NonNull,
};

use anyhow::{bail, Result};

pub struct MapMemory {
    base: NonNull<libc::c_void>,
    len: usize,
}

/// How the mapping may be used.
#[derive(Clone, Copy)]
pub enum Access {
    Read,
    ReadWrite,
}

impl MapMemory {
    /// `bytes` (rounded up to whole pages) of the map behind `fd` from its
    /// start, shared with the kernel; `what` names it in errors.
    pub fn of(fd: BorrowedFd<'_>, bytes: usize, access: Access, what: &str) -> Result<Self> {
        let page = page_size()?;
        let len = bytes.div_ceil(page) * page;
        let protection = match access {
            Access::Read => libc::PROT_READ,
            Access::ReadWrite => libc::PROT_READ | libc::PROT_WRITE,
        };
        // SAFETY: a new shared mapping of a BPF map; the kernel checks the
        // fd, the range and the access the map allows.
        let mapped = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                protection,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if mapped == libc::MAP_FAILED {
            bail!("mapping {what}: {}", std::io::Error::last_os_error());
        }
        Ok(Self {
            base: NonNull::new(mapped).expect("mmap returned MAP_FAILED or a mapping"),
            len,
        })
    }

    /// The start of the mapping (page-aligned), valid while `self` is.
    #[must_use]
    pub fn base(&self) -> *mut libc::c_void {
        self.base.as_ptr()
    }
}

impl Drop for MapMemory {
    fn drop(&mut self) {
        // SAFETY: unmapping the mapping made in `of`, used by nothing else.
        unsafe {
            libc::munmap(self.base.as_ptr(), self.len);
        }
    }
}

/// This machine's page size.
pub fn page_size() -> Result<usize> {
    // SAFETY: sysconf has no memory arguments.
    Ok(usize::try_from(unsafe {
        libc::sysconf(libc::_SC_PAGESIZE)
    })?)
}
