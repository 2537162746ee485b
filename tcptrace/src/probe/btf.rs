//! `struct sock` offsets resolved from the kernel's BTF
//! (`/sys/kernel/btf/vmlinux`), for what the tracepoint records do not
//! carry (the socket's network namespace, its error when it dies) and for
//! the raw tracepoint of summary mode, which has no record at all.

use anyhow::{bail, Context, Result};
use btf_rs::{Backend, Btf, Type};
use tcptrace_common::KernelLayout;

use crate::event::layout::SockCommonLayout;

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Everything tcptrace reads from the kernel's BTF, parsed once.
#[derive(Debug)]
pub struct KernelOffsets {
    pub layout: KernelLayout,
    /// Offset of `sp` in `struct pt_regs` (see `Settings::regs_sp`).
    pub regs_sp: u32,
    /// Where addresses and ports sit in `struct sock_common`, for summary
    /// records (which copy its start).
    pub sock_common: SockCommonLayout,
}

pub fn kernel_offsets() -> Result<KernelOffsets> {
    // Mapped and read on demand: parsing all of the kernel's BTF up front
    // costs ~30 MiB of heap for the few offsets needed here. Kernels that
    // cannot map it (before 6.16) are parsed.
    let btf = Btf::from_file_with_backend(VMLINUX_BTF, Backend::Mmap)
        .or_else(|_| Btf::from_file(VMLINUX_BTF))
        .with_context(|| format!("reading kernel BTF from {VMLINUX_BTF}"))?;
    offsets_in(&btf)
}

/// Whether the kernel's BTF types the tracepoint `name` (its
/// `btf_trace_<name>` typedef): a typed (`tp_btf`) program can attach.
#[must_use]
pub fn types_tracepoint(name: &str) -> bool {
    Btf::from_file_with_backend(VMLINUX_BTF, Backend::Mmap)
        .or_else(|_| Btf::from_file(VMLINUX_BTF))
        .is_ok_and(|btf| {
            btf.resolve_types_by_name(&format!("btf_trace_{name}"))
                .is_ok_and(|types| !types.is_empty())
        })
}

fn offsets_in(btf: &Btf) -> Result<KernelOffsets> {
    Ok(KernelOffsets {
        layout: kernel_layout(btf)?,
        regs_sp: u32::try_from(member_offset(btf, "pt_regs", &["sp"])?)?,
        sock_common: sock_common_layout(btf)?,
    })
}

fn sock_common_layout(btf: &Btf) -> Result<SockCommonLayout> {
    let at = |field: &str| member_offset(btf, "sock_common", &[field]);
    SockCommonLayout {
        family: at("skc_family")?,
        daddr: at("skc_daddr")?,
        rcv_saddr: at("skc_rcv_saddr")?,
        dport: at("skc_dport")?,
        num: at("skc_num")?,
        state: at("skc_state")?,
        v6_daddr: at("skc_v6_daddr")?,
        v6_rcv_saddr: at("skc_v6_rcv_saddr")?,
    }
    .checked()
}

/// Offsets of `sock.__sk_common.skc_net.net`, `net.ns.inum`, `sock.sk_err`,
/// `sock.sk_protocol`, `sock.__sk_common.skc_num` and the `task_struct`
/// members `group_leader`, `comm` and `mm`, and the path from a task's
/// file descriptor to its `struct sock`.
fn kernel_layout(btf: &Btf) -> Result<KernelLayout> {
    let sock_net = member_offset(btf, "sock", &["__sk_common", "skc_net", "net"])?;
    let net_inum = member_offset(btf, "net", &["ns", "inum"])?;
    let sock_err = member_offset(btf, "sock", &["sk_err"])?;
    let sock_protocol = member_offset(btf, "sock", &["sk_protocol"])?;
    let sock_num = member_offset(btf, "sock", &["__sk_common", "skc_num"])?;
    let task_group_leader = member_offset(btf, "task_struct", &["group_leader"])?;
    let task_comm = member_offset(btf, "task_struct", &["comm"])?;
    let task_mm = member_offset(btf, "task_struct", &["mm"])?;
    // From an fd to its socket (accept); 0 where this kernel differs, and
    // the accept hook stays off.
    let optional = |name: &str, path: &[&str]| {
        member_offset(btf, name, path)
            .ok()
            .and_then(|offset| u32::try_from(offset).ok())
            .unwrap_or(0)
    };
    Ok(KernelLayout {
        sock_net: u32::try_from(sock_net)?,
        net_inum: u32::try_from(net_inum)?,
        sock_err: u32::try_from(sock_err)?,
        sock_protocol: u32::try_from(sock_protocol)?,
        sock_num: u32::try_from(sock_num)?,
        // The kernel's port filter only; without it, records pass by.
        sock_dport: optional("sock", &["__sk_common", "skc_dport"]),
        task_group_leader: u32::try_from(task_group_leader)?,
        task_comm: u32::try_from(task_comm)?,
        task_mm: u32::try_from(task_mm)?,
        task_files: optional("task_struct", &["files"]),
        files_fdt: optional("files_struct", &["fdt"]),
        fdtable_max_fds: optional("fdtable", &["max_fds"]),
        fdtable_fd: optional("fdtable", &["fd"]),
        file_private_data: optional("file", &["private_data"]),
        socket_sk: optional("socket", &["sk"]),
        sock_state: u32::try_from(member_offset(btf, "sock", &["__sk_common", "skc_state"])?)?,
        mm_start_stack: optional("mm_struct", &["start_stack"]),
        // `struct inet_sock` starts with its `struct sock`.
        inet_sport: u32::try_from(member_offset(btf, "inet_sock", &["inet_sport"])?)?,
        // `struct tcp_sock` starts with its `struct sock` too.
        tcp_bytes_received: optional("tcp_sock", &["bytes_received"]),
        tcp_rcv_tstamp: optional("tcp_sock", &["rcv_tstamp"]),
        tcp_lrcvtime: optional("tcp_sock", &["inet_conn", "icsk_ack", "lrcvtime"]),
        tcp_snd_nxt: optional("tcp_sock", &["snd_nxt"]),
        tcp_write_seq: optional("tcp_sock", &["write_seq"]),
        sock_family: u32::try_from(member_offset(btf, "sock", &["__sk_common", "skc_family"])?)?,
        sock_rcv_saddr: u32::try_from(member_offset(
            btf,
            "sock",
            &["__sk_common", "skc_rcv_saddr"],
        )?)?,
        sock_v6_rcv_saddr: u32::try_from(member_offset(
            btf,
            "sock",
            &["__sk_common", "skc_v6_rcv_saddr"],
        )?)?,
        sock_daddr: u32::try_from(member_offset(btf, "sock", &["__sk_common", "skc_daddr"])?)?,
        sock_v6_daddr: u32::try_from(member_offset(
            btf,
            "sock",
            &["__sk_common", "skc_v6_daddr"],
        )?)?,
        sock_socket: optional("sock", &["sk_socket"]),
        socket_ino: socket_ino(btf).unwrap_or(0),
        task_flags: optional("task_struct", &["flags"]),
        ..preempt_count_path(btf).unwrap_or_default()
    })
}

/// From a `struct socket` to its inode number: the socket is the first
/// half of a `struct socket_alloc`, its inode the second.
fn socket_ino(btf: &Btf) -> Option<u32> {
    let socket = member_offset(btf, "socket_alloc", &["socket"]).ok()?;
    let ino = member_offset(btf, "socket_alloc", &["vfs_inode", "i_ino"]).ok()?;
    u32::try_from(ino.checked_sub(socket)?).ok()
}

/// The way from the current task to this CPU's `preempt_count`:
/// `task->se.cfs_rq->rq` is this CPU's per-CPU `runqueues`, and the
/// distance between two per-CPU variables is the same on every CPU (their
/// offsets in the `.data..percpu` section). `None` on kernels without one
/// of the links (no group scheduling, `preempt_count` inside another
/// per-CPU struct): the softirq programs keep the context flag instead.
fn preempt_count_path(btf: &Btf) -> Option<KernelLayout> {
    let task_se_cfs_rq = member_offset(btf, "task_struct", &["se", "cfs_rq"]).ok()?;
    let cfs_rq_rq = member_offset(btf, "cfs_rq", &["rq"]).ok()?;
    let percpu = percpu_offsets(btf, &["__preempt_count", "runqueues"]).ok()?;
    let (preempt_count, runqueues) = (percpu[0]?, percpu[1]?);
    Some(KernelLayout {
        task_se_cfs_rq: u32::try_from(task_se_cfs_rq).ok()?,
        cfs_rq_rq: u32::try_from(cfs_rq_rq).ok()?,
        preempt_count_from_rq: i32::try_from(i64::from(preempt_count) - i64::from(runqueues))
            .ok()?,
        ..KernelLayout::default()
    })
}

/// Offsets of per-CPU variables in the kernel's `.data..percpu` section,
/// in the order asked (`None` for one the section does not hold).
fn percpu_offsets(btf: &Btf, names: &[&str]) -> Result<Vec<Option<u32>>> {
    let section = btf
        .resolve_types_by_name(".data..percpu")?
        .into_iter()
        .find_map(|t| match t {
            Type::Datasec(section) => Some(section),
            _ => None,
        })
        .context("no .data..percpu section in kernel BTF")?;
    let mut found = vec![None; names.len()];
    for variable in &section.variables {
        let Ok(Type::Var(var)) = btf.resolve_chained_type(variable) else {
            continue;
        };
        let Ok(name) = btf.resolve_name(&var) else {
            continue;
        };
        if let Some(i) = names.iter().position(|n| *n == name) {
            found[i] = Some(variable.offset());
        }
    }
    Ok(found)
}

/// Byte offset of the member reached by `path` from `struct <name>`,
/// looking through anonymous structs and unions on the way.
fn member_offset(btf: &Btf, name: &str, path: &[&str]) -> Result<usize> {
    let root = btf
        .resolve_types_by_name(name)
        .with_context(|| format!("no type `{name}` in kernel BTF"))?
        .into_iter()
        .find(|t| matches!(t, Type::Struct(_)))
        .with_context(|| format!("`{name}` is not a struct in kernel BTF"))?;
    let mut offset = 0;
    let mut current = root;
    for member_name in path {
        let (member_offset, member_type) =
            find_member(btf, &current, member_name)?.with_context(|| {
                format!(
                    "no member `{member_name}` on the way to {name}.{}",
                    path.join(".")
                )
            })?;
        offset += member_offset;
        current = member_type;
    }
    Ok(offset)
}

/// Finds `wanted` in a struct or union (or through typedefs and modifiers
/// to one), descending into anonymous members. Returns its byte offset and
/// its resolved type.
fn find_member(btf: &Btf, container: &Type, wanted: &str) -> Result<Option<(usize, Type)>> {
    let container = skip_aliases(btf, container.clone())?;
    let members = match &container {
        Type::Struct(s) | Type::Union(s) => &s.members,
        other => bail!("expected a struct or union, found {}", other.name()),
    };
    for member in members {
        let bit_offset = member.bit_offset();
        if bit_offset % 8 != 0 {
            continue;
        }
        let byte_offset = usize::try_from(bit_offset / 8)?;
        let name = btf.resolve_name(member).unwrap_or_default();
        let member_type = btf.resolve_chained_type(member)?;
        if name == wanted {
            return Ok(Some((byte_offset, member_type)));
        }
        if name.is_empty() {
            if let Some((inner, ty)) = find_member(btf, &member_type, wanted)? {
                return Ok(Some((byte_offset + inner, ty)));
            }
        }
    }
    Ok(None)
}

fn skip_aliases(btf: &Btf, mut ty: Type) -> Result<Type> {
    loop {
        match &ty {
            Type::Typedef(_)
            | Type::Const(_)
            | Type::Volatile(_)
            | Type::Restrict(_)
            | Type::TypeTag(_) => {
                let next = ty.as_btf_type().context("alias without type")?;
                ty = btf.resolve_chained_type(next)?;
            }
            _ => return Ok(ty),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The mapped BTF, read on demand, must give the very offsets the fully
    /// parsed one gives: a wrong one would make the kernel programs read
    /// the wrong field of every socket.
    #[test]
    fn mapped_and_parsed_btf_agree() {
        let mapped = Btf::from_file_with_backend(VMLINUX_BTF, Backend::Mmap)
            .expect("this kernel maps its BTF");
        let parsed = Btf::from_file(VMLINUX_BTF).expect("kernel BTF");
        assert_eq!(
            format!("{:?}", offsets_in(&mapped).unwrap()),
            format!("{:?}", offsets_in(&parsed).unwrap())
        );
    }

    /// This kernel types the state-change tracepoint (the daemon's program
    /// attaches there); a name no kernel has is not typed.
    #[test]
    fn typed_tracepoints_are_found_in_the_kernels_btf() {
        assert!(types_tracepoint("inet_sock_set_state"));
        assert!(!types_tracepoint("tcptrace_no_such_tracepoint"));
    }
}
