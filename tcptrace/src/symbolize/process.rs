//! A process's address space as `/proc/<tgid>/maps` showed it when
//! tcptrace first met the process, with the file behind each mapping of
//! code found right then. Kept after the process exits, so a stack captured
//! by a process that connects, closes and exits within milliseconds is
//! still unwound and symbolized (the kernel wakes us at a process's first
//! capture so that its mappings are read while it lives).
//!
//! The parse of `maps` is written here: it is a handful of fields per line,
//! and tcptrace needs exactly these (blazesym's parser is internal to it).

use std::{fs, path::PathBuf};

use super::files::FileKey;

/// One line of `/proc/<tgid>/maps`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Mapping {
    pub(super) start: u64,
    pub(super) end: u64,
    /// Offset in the file of `start`.
    pub(super) offset: u64,
    pub(super) executable: bool,
    pub(super) backing: Backing,
    /// (device, inode) of the mapped file, as `stat` gives them.
    pub(super) inode: (u64, u64),
}

/// What a mapping maps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Backing {
    /// A file, by its path in the process's mount namespace.
    File(PathBuf),
    /// Anonymous memory: JIT code lives there (named by perf maps).
    Anonymous,
    /// `[vdso]`, `[stack]`, `[heap]`...: nothing to read.
    Other,
}

/// The address space of one process (one exec of it).
pub(super) struct ProcessImage {
    /// `task->mm` of the captures it serves (0 when not known): a capture
    /// with another one is a new image (exec, or a reused pid).
    pub(super) mm: u64,
    /// Sorted by `start`.
    pub(super) mappings: Vec<Mapping>,
    /// The open file behind each executable file mapping (same index as
    /// `mappings`), or why there is none.
    pub(super) files: Vec<Option<Result<FileKey, String>>>,
    /// The pid inside the process's own pid namespace: perf maps are named
    /// after it (`/tmp/perf-<nspid>.map`).
    pub(super) nspid: u32,
    /// A JVM (it maps libjvm.so): its perf map can be asked for.
    pub(super) jvm: bool,
}

impl ProcessImage {
    /// The mapping holding `addr`, with its index.
    pub(super) fn mapping_of(&self, addr: u64) -> Option<(usize, &Mapping)> {
        let i = self.mappings.partition_point(|m| m.start <= addr);
        let index = i.checked_sub(1)?;
        let mapping = &self.mappings[index];
        (addr < mapping.end).then_some((index, mapping))
    }

    /// The file and file offset of `addr`, when it lies in mapped code of
    /// a file that could be opened.
    pub(super) fn file_offset(&self, addr: u64) -> Option<Result<(&FileKey, u64), &str>> {
        let (index, mapping) = self.mapping_of(addr)?;
        match self.files.get(index)?.as_ref()? {
            Ok(key) => Some(Ok((key, addr - mapping.start + mapping.offset))),
            Err(reason) => Some(Err(reason)),
        }
    }
}

/// Reads the mappings of live process `tgid`.
pub(super) fn read_mappings(tgid: u32) -> Result<Vec<Mapping>, String> {
    let path = format!("/proc/{tgid}/maps");
    let text = fs::read_to_string(&path).map_err(|err| format!("{path}: {err}"))?;
    let mappings = parse_mappings(&text);
    // An exiting process's mappings are torn down (a zombie has none).
    if mappings.is_empty() {
        return Err(format!("{path}: no mappings (exiting)"));
    }
    Ok(mappings)
}

/// The mappings `/proc/<tgid>/maps` text lists, sorted by address.
pub(super) fn parse_mappings(text: &str) -> Vec<Mapping> {
    let mut mappings: Vec<Mapping> = text.lines().filter_map(parse_line).collect();
    mappings.sort_unstable_by_key(|m| m.start);
    mappings
}

/// The pid of `tgid` in its innermost pid namespace (the last `NSpid`).
pub(super) fn namespace_pid(tgid: u32) -> u32 {
    fs::read_to_string(format!("/proc/{tgid}/status"))
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("NSpid:"))?;
            line.split_whitespace().last()?.parse().ok()
        })
        .unwrap_or(tgid)
}

/// `start-end perms offset dev inode [path]`; `None` for a line that does
/// not parse (a kernel would not write one).
fn parse_line(line: &str) -> Option<Mapping> {
    let mut fields = line.splitn(6, ' ');
    let (start, end) = fields.next()?.split_once('-')?;
    let perms = fields.next()?;
    let offset = fields.next()?;
    let dev = fields.next()?;
    let inode = fields.next()?;
    let (major, minor) = dev.split_once(':')?;
    let device = libc::makedev(
        u32::from_str_radix(major, 16).ok()?,
        u32::from_str_radix(minor, 16).ok()?,
    );
    let path = fields.next().map_or("", str::trim_start);
    // A file deleted or replaced since it was mapped is still found
    // (through `map_files`, or checked and turned down at its old path).
    let path = path.strip_suffix(" (deleted)").unwrap_or(path);
    let backing = if inode != "0" && path.starts_with('/') {
        Backing::File(PathBuf::from(path))
    } else if path.is_empty() {
        Backing::Anonymous
    } else {
        Backing::Other
    };
    Some(Mapping {
        start: u64::from_str_radix(start, 16).ok()?,
        end: u64::from_str_radix(end, 16).ok()?,
        offset: u64::from_str_radix(offset, 16).ok()?,
        executable: perms.as_bytes().get(2) == Some(&b'x'),
        inode: (device, inode.parse().ok()?),
        backing,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_maps_lines() {
        let maps = "\
55d0c0a00000-55d0c0a02000 r--p 00000000 fe:01 1234 /usr/bin/curl
55d0c0a02000-55d0c0a10000 r-xp 00002000 fe:01 1234 /usr/bin/curl
7f00aa000000-7f00aa100000 rwxp 00000000 00:00 0 
7f00ab000000-7f00ab001000 r-xp 00000000 00:00 0                          [vdso]
7f00ac000000-7f00ac001000 r-xp 00001000 fe:01 99 /tmp/gone (deleted)
7f00ad000000-7f00ad001000 r-xp 00001000 fe:01 98 /opt/app/with space.so";
        let mappings: Vec<Mapping> = maps.lines().filter_map(parse_line).collect();
        assert_eq!(mappings.len(), 6);
        assert_eq!(mappings[1].start, 0x55d0_c0a0_2000);
        assert_eq!(mappings[1].offset, 0x2000);
        assert_eq!(mappings[1].inode, (libc::makedev(0xfe, 1), 1234));
        assert!(mappings[1].executable && !mappings[0].executable);
        assert_eq!(
            mappings[1].backing,
            Backing::File(PathBuf::from("/usr/bin/curl"))
        );
        assert_eq!(mappings[2].backing, Backing::Anonymous);
        assert_eq!(mappings[3].backing, Backing::Other);
        assert_eq!(
            mappings[4].backing,
            Backing::File(PathBuf::from("/tmp/gone"))
        );
        assert_eq!(
            mappings[5].backing,
            Backing::File(PathBuf::from("/opt/app/with space.so"))
        );

        let image = ProcessImage {
            mm: 0,
            files: vec![None; mappings.len()],
            mappings,
            nspid: 1,
            jvm: false,
        };
        assert_eq!(image.mapping_of(0x55d0_c0a0_2010).map(|(i, _)| i), Some(1));
        assert!(image.mapping_of(0x10).is_none());
        assert!(
            image.mapping_of(0x7f00_ad00_1000).is_none(),
            "end is exclusive"
        );
    }
}
