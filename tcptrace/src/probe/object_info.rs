//! `BPF_OBJ_GET_INFO_BY_FD`: what the kernel says of a loaded program or
//! map that aya does not expose (a program's skipped runs and run time, a
//! map's size). Hand-written: one system call with the kernel's own
//! structures from `aya-obj`.

use std::os::fd::{AsRawFd, BorrowedFd};

use aya_obj::generated::{bpf_attr, bpf_cmd, bpf_map_info, bpf_prog_info};

/// The kernel's info structures this call fills.
pub trait ObjectInfo: Sized {}

impl ObjectInfo for bpf_prog_info {}
impl ObjectInfo for bpf_map_info {}

/// The info the kernel gives for the program or map behind `fd`.
pub fn object_info<T: ObjectInfo>(fd: BorrowedFd<'_>) -> std::io::Result<T> {
    let invalid = |_| std::io::Error::from(std::io::ErrorKind::InvalidInput);
    // SAFETY: `T` is one of the kernel's plain C info structures (the
    // trait is implemented for those only), for which all-zero is valid;
    // so is `bpf_attr`.
    let mut info: T = unsafe { std::mem::zeroed() };
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    attr.info.bpf_fd = u32::try_from(fd.as_raw_fd()).map_err(invalid)?;
    attr.info.info_len = u32::try_from(std::mem::size_of::<T>()).map_err(invalid)?;
    attr.info.info = std::ptr::addr_of_mut!(info) as u64;
    // SAFETY: `attr` points the kernel at `info`, which outlives the call
    // and is as large as `info_len` says.
    let result = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            bpf_cmd::BPF_OBJ_GET_INFO_BY_FD as libc::c_long,
            std::ptr::addr_of_mut!(attr),
            std::mem::size_of::<bpf_attr>(),
        )
    };
    if result == 0 {
        Ok(info)
    } else {
        Err(std::io::Error::last_os_error())
    }
}
