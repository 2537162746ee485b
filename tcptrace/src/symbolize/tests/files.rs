//! Finding the file a process maps: copies shared, paths in another mount
//! namespace, and a library replaced on disk under a running process, with
//! only the capabilities the daemon keeps after attaching.

use std::{
    fs,
    path::{Path, PathBuf},
    time::Duration,
};

use super::{child_addr_in, code_files, libc_fn_addr, libc_path, spawn_sleep, TempDir};
use crate::symbolize::{frame::UNKNOWN, Frame, Symbolizer};

#[test]
fn copies_of_a_file_are_one_file() {
    // Two copies of libc, loaded by two processes: other inodes, one build id.
    let libc = libc_path();
    let dir = TempDir::new("copies");
    let mut children = Vec::new();
    let mut files = 0;
    let mut symbolizer = Symbolizer::new();
    for copy in ["a", "b"] {
        let copy = dir.0.join(copy);
        fs::create_dir(&copy).unwrap();
        fs::copy(&libc, copy.join(Path::new(&libc).file_name().unwrap())).unwrap();
        let child = std::process::Command::new("sleep")
            .arg("30")
            .env("LD_LIBRARY_PATH", &copy)
            .spawn()
            .unwrap();
        let tgid = child.id();
        children.push(child);
        let copy = copy.to_str().unwrap().to_owned();
        let ip = child_addr_in(tgid, libc_fn_addr(), |_, theirs| theirs.starts_with(&copy));
        let frames = symbolizer.symbolize(tgid, &[ip]);
        assert_eq!(symbolizer.last_error(tgid), None);
        assert!(frames[0].function.contains("getpid"), "{frames:#?}");
        files = code_files(&tgid.to_string());
    }
    for mut child in children {
        child.kill().unwrap();
        child.wait().unwrap();
    }
    // Every file of code opened once for both processes, the two libc
    // copies included (Debian's libc has a build id; without one they would
    // be two files); their inodes are two.
    assert_eq!(usize::try_from(symbolizer.files.opened).unwrap(), files);
    assert_eq!(symbolizer.files.inodes.len(), files + 1);
}

#[test]
fn opens_files_through_the_process_root() {
    let (mut child, ip) = spawn_sleep();
    let tgid = child.id();
    let mut symbolizer = Symbolizer::new();
    let frames = symbolizer.symbolize(tgid, &[ip]);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(frames[0].function.contains("getpid"), "{frames:#?}");
    assert_eq!(frames[0].module.as_deref(), Some(libc_path().as_str()));
    let opened = opened_via(&symbolizer);
    let root = format!("/proc/{tgid}/root/");
    assert!(
        opened.iter().all(|path| path.starts_with(&root)),
        "{opened:?}"
    );
    assert!(
        opened.contains(&PathBuf::from(format!("/proc/{tgid}/root{}", libc_path()))),
        "{opened:?}"
    );
}

/// A process in its own mount namespace loads libc from a directory that
/// in ours holds something else: only `/proc/<pid>/root` finds its file.
/// Symbolized with only the capabilities the daemon keeps after attach.
#[test]
fn symbolizes_a_process_in_another_mount_namespace() {
    let dir = TempDir::new("mntns");
    let libc = libc_path();
    let name = Path::new(&libc).file_name().unwrap().to_str().unwrap();
    // What the bare path names in our namespace: another ELF file.
    fs::copy("/bin/true", dir.0.join(name)).unwrap();
    let dir_s = dir.0.to_str().unwrap();
    let script = format!(
        "mount -t tmpfs tmpfs {dir_s} && cp {libc} {dir_s}/ && \
         exec env LD_LIBRARY_PATH={dir_s} sleep 30"
    );
    // Root unshares a mount namespace; others need a user namespace too.
    let root = unsafe { libc::geteuid() } == 0;
    let unshare_args: &[&str] = if root {
        &["-m", "--propagation", "private"]
    } else {
        &["-r", "-m", "--propagation", "private"]
    };
    let mut child = std::process::Command::new("unshare")
        .args(unshare_args)
        .args(["sh", "-c", &script])
        .spawn()
        .unwrap();
    let tgid = child.id();
    let in_ns = format!("{dir_s}/{name}");
    let mapped = (0..300).any(|_| {
        std::thread::sleep(Duration::from_millis(10));
        fs::read_to_string(format!("/proc/{tgid}/maps")).is_ok_and(|m| m.contains(&in_ns))
    });
    if !mapped && !root {
        child.kill().unwrap();
        child.wait().unwrap();
        // Unprivileged and without user namespaces: cannot set this up.
        eprintln!("no user namespaces for an unprivileged mount namespace: skipped");
        return;
    }
    let ip = child_addr_in(tgid, libc_fn_addr(), |_, theirs| theirs == in_ns);
    let (frames, error, opened) = symbolize_as_daemon(tgid, ip);
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(error, None);
    assert!(frames[0].function.contains("getpid"), "{frames:#?}");
    assert_eq!(frames[0].module.as_deref(), Some(in_ns.as_str()));
    assert!(
        opened.contains(&PathBuf::from(format!("/proc/{tgid}/root{in_ns}"))),
        "{opened:?}"
    );
}

/// A library replaced on disk (as upgrades do) while a process maps the
/// old one: its path now names another file, which must not be used.
#[test]
fn replaced_library_is_not_used_by_mistake() {
    let dir = TempDir::new("replaced");
    let libc = libc_path();
    let name = Path::new(&libc).file_name().unwrap();
    fs::copy(&libc, dir.0.join(name)).unwrap();
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .env("LD_LIBRARY_PATH", &dir.0)
        .spawn()
        .unwrap();
    let tgid = child.id();
    let mapped = dir.0.join(name).to_str().unwrap().to_owned();
    let ip = child_addr_in(tgid, libc_fn_addr(), |_, theirs| theirs == mapped);
    fs::copy("/bin/true", dir.0.join("new")).unwrap();
    fs::rename(dir.0.join("new"), dir.0.join(name)).unwrap();

    // Without CAP_SYS_ADMIN the deleted file cannot be opened: "??" and why.
    let (frames, error, _) = symbolize_as_daemon(tgid, ip);
    assert_eq!(frames[0].function, UNKNOWN, "{frames:#?}");
    let error = error.unwrap();
    assert!(error.contains("not the file the process maps"), "{error}");

    // With it, through `map_files`.
    if caps::has_cap(
        None,
        caps::CapSet::Effective,
        caps::Capability::CAP_SYS_ADMIN,
    )
    .unwrap_or(false)
    {
        let mut symbolizer = Symbolizer::new();
        let frames = symbolizer.symbolize(tgid, &[ip]);
        assert_eq!(symbolizer.last_error(tgid), None);
        assert!(frames[0].function.contains("getpid"), "{frames:#?}");
        // (The new file at the path was opened too, and turned down.)
        let opened = opened_via(&symbolizer);
        let map_files = format!("/proc/{tgid}/map_files/");
        assert!(
            opened.iter().any(|path| path.starts_with(&map_files)),
            "{opened:?}"
        );
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Symbolizes `ip` of `tgid` in a thread left with only the capabilities
/// the daemon keeps after attaching (capabilities are per thread): the
/// frames, `last_error` and the paths files were opened by.
fn symbolize_as_daemon(tgid: u32, ip: u64) -> (Vec<Frame>, Option<String>, Vec<PathBuf>) {
    std::thread::spawn(move || {
        let kept: caps::CapsHashSet = crate::privileges::KEPT.into_iter().collect();
        let effective = caps::read(None, caps::CapSet::Effective).unwrap();
        caps::set(
            None,
            caps::CapSet::Effective,
            &effective.intersection(&kept).copied().collect(),
        )
        .unwrap();
        let mut symbolizer = Symbolizer::new();
        let frames = symbolizer.symbolize(tgid, &[ip]);
        let error = symbolizer.last_error(tgid).map(ToOwned::to_owned);
        (frames, error, opened_via(&symbolizer))
    })
    .join()
    .unwrap()
}

/// The paths the files open were opened by.
fn opened_via(symbolizer: &Symbolizer) -> Vec<PathBuf> {
    symbolizer
        .files
        .open
        .values()
        .map(|open| open.opened_via.clone())
        .collect()
}
