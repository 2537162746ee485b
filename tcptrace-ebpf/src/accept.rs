//! `syscalls:sys_exit_accept4` and `sys_exit_accept`: an accepted socket
//! belongs to the process that accepted it. Until then (the handshake runs
//! in softirq) it carries its listener's owner; a pre-fork server's workers
//! accept on the listener the master opened, and its churn, TIME_WAIT and
//! leaks are theirs.

use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, bpf_probe_read_kernel, generated as gen},
    programs::TracePointContext,
};
use tcptrace_common::{Counter, OWNER_FROM_ACCEPT, OWNER_FROM_LISTENER};

use crate::{
    context::{current_cgroup_id, current_task, StackFor},
    emit::copy_words,
    filter::{socket_ports, stack_unless_ruled_out},
    maps::{accept_layout, count, kernel_layout, live_sock},
    sock::{inode_of, Probe},
};

pub fn on_accept_exit(ctx: &TracePointContext) -> Result<(), ()> {
    // SAFETY: the offset comes from the tracepoint's format in tracefs.
    let fd: i64 = unsafe { ctx.read_at(accept_layout().ret as usize) }
        .map_err(|_| count(Counter::ReadErrors))?;
    let Ok(fd) = u32::try_from(fd) else {
        return Ok(()); // accept failed
    };
    let skaddr = sock_of_fd(fd).ok_or_else(|| count(Counter::ReadErrors))?;
    let Some(info) = live_sock(skaddr) else {
        return Ok(()); // not a socket tcptrace follows (or the map was full)
    };
    let stack = stack_unless_ruled_out(StackFor::Accept, || socket_ports::<Probe>(skaddr));
    // SAFETY: a BPF helper with no memory arguments.
    let owner = current_task(stack, unsafe { bpf_ktime_get_ns() });
    // SAFETY: `info` points into the SOCKS map value; a concurrent update of
    // the same socket can at worst mix two owners' fields, which the next
    // state change's record shows whole again.
    unsafe {
        copy_words(&raw mut (*info).owner, &raw const owner);
        (*info).cgroup_id = current_cgroup_id();
        (*info).inode = inode_of::<Probe>(skaddr);
        (*info).flags = ((*info).flags & !OWNER_FROM_LISTENER) | OWNER_FROM_ACCEPT;
    }
    Ok(())
}

/// The `struct sock` behind the current task's file descriptor `fd`:
/// `current->files->fdt->fd[fd]->private_data->sk`, at offsets from BTF.
#[inline(always)]
fn sock_of_fd(fd: u32) -> Option<u64> {
    let layout = kernel_layout();
    if layout.task_files == 0 || layout.socket_sk == 0 {
        return None;
    }
    // SAFETY: every step is a probe read, which checks the address.
    unsafe {
        let read = |at: u64| {
            bpf_probe_read_kernel(at as *const u64)
                .ok()
                .filter(|&p| p != 0)
        };
        let task = gen::bpf_get_current_task_btf() as u64;
        let files = read(task + u64::from(layout.task_files))?;
        let fdt = read(files + u64::from(layout.files_fdt))?;
        let max_fds: u32 =
            bpf_probe_read_kernel((fdt + u64::from(layout.fdtable_max_fds)) as *const u32).ok()?;
        if fd >= max_fds {
            return None;
        }
        let fds = read(fdt + u64::from(layout.fdtable_fd))?;
        let file = read(fds + u64::from(fd) * 8)?;
        let socket = read(file + u64::from(layout.file_private_data))?;
        read(socket + u64::from(layout.socket_sk))
    }
}
