//! Perf maps: how JIT runtimes name the code they generate in anonymous
//! memory (`/tmp/perf-<pid>.map`, one `START SIZE name` line per piece of
//! code, in hex). The JVM writes it on request (`jcmd PID Compiler.perfmap`,
//! see `jvm.rs`), Node with `--perf-basic-prof` (and
//! `--interpreted-frames-native-stack` for functions it still interprets),
//! Python 3.12+ with `-X perf`.
//!
//! Read here rather than by blazesym: the JDK writes its addresses with a
//! `0x` prefix, which blazesym 0.2 rejects, and a containerized process
//! names the file after its pid in its own namespace, under its own root.

use std::{
    fs::{self, File},
    io::{BufRead, BufReader},
    os::unix::fs::MetadataExt,
    path::PathBuf,
};

/// Entries read from one file at most (a JVM's map grows with compiled
/// code; tens of thousands of lines are normal).
const MAX_ENTRIES: usize = 1_000_000;

/// One process's perf map as last read.
#[derive(Default)]
pub(super) struct PerfMap {
    /// (start, end, name), sorted by start.
    entries: Vec<(u64, u64, String)>,
    /// (size, mtime) of the file when read: re-read when it changed.
    version: Option<(u64, i64, i64)>,
}

impl PerfMap {
    /// The path of the perf map of `tgid` (pid `nspid` in its own pid
    /// namespace), through the process's root.
    pub(super) fn path(tgid: u32, nspid: u32) -> PathBuf {
        PathBuf::from(format!("/proc/{tgid}/root/tmp/perf-{nspid}.map"))
    }

    /// Re-reads the file if it changed since last time; false when there
    /// is none.
    pub(super) fn refresh(&mut self, tgid: u32, nspid: u32) -> bool {
        let path = Self::path(tgid, nspid);
        let Ok(meta) = fs::metadata(&path) else {
            return !self.entries.is_empty();
        };
        let version = Some((meta.size(), meta.mtime(), meta.mtime_nsec()));
        if version == self.version || !meta.is_file() {
            return !self.entries.is_empty();
        }
        if let Ok(file) = File::open(&path) {
            self.entries = parse(BufReader::new(file));
            self.version = version;
        }
        !self.entries.is_empty()
    }

    /// The name of the code at `addr`.
    pub(super) fn lookup(&self, addr: u64) -> Option<&str> {
        let i = self.entries.partition_point(|(start, _, _)| *start <= addr);
        let (_, end, name) = self.entries.get(i.checked_sub(1)?)?;
        (addr < *end).then_some(name.as_str())
    }
}

fn parse(reader: impl BufRead) -> Vec<(u64, u64, String)> {
    let hex = |field: &str| {
        let digits = field
            .strip_prefix("0x")
            .or_else(|| field.strip_prefix("0X"))
            .unwrap_or(field);
        u64::from_str_radix(digits, 16).ok()
    };
    let mut entries: Vec<(u64, u64, String)> = reader
        .lines()
        .map_while(Result::ok)
        .take(MAX_ENTRIES)
        .filter_map(|line| {
            let mut fields = line.splitn(3, ' ');
            let start = hex(fields.next()?)?;
            let size = hex(fields.next()?)?;
            let name = fields.next()?.trim();
            (size > 0 && !name.is_empty())
                .then(|| (start, start.saturating_add(size), name.to_owned()))
        })
        .collect();
    // Later lines describe code placed later: a start seen twice keeps the last.
    entries.reverse();
    entries.sort_by_key(|(start, _, _)| *start);
    entries.dedup_by_key(|(start, _, _)| *start);
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_jdk_and_node_formats() {
        let text = "\
0x00007f3ac1000100 0x0000000000000080 Interpreter
0x00007f3ac1234560 0x00000000000001a0 void Client.connectPerRequest(java.lang.String, int)
7f3ac2000000 40 LazyCompile:*nodeConnectPerRequest /app/client.js:12
bogus line
7f3ac3000000 0 empty";
        let map = PerfMap {
            entries: parse(text.as_bytes()),
            ..PerfMap::default()
        };
        assert_eq!(map.entries.len(), 3);
        assert_eq!(map.lookup(0x7f3a_c100_0100), Some("Interpreter"));
        assert_eq!(
            map.lookup(0x7f3a_c123_4600),
            Some("void Client.connectPerRequest(java.lang.String, int)")
        );
        assert_eq!(
            map.lookup(0x7f3a_c200_003f),
            Some("LazyCompile:*nodeConnectPerRequest /app/client.js:12")
        );
        assert_eq!(map.lookup(0x7f3a_c200_0040), None, "end is exclusive");
        assert_eq!(map.lookup(0x10), None);
    }
}
