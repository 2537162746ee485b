//! From addresses of a process to frames: each address is placed in the
//! process's mappings (read when tcptrace met it), turned into a file and
//! offset, and answered from the (file, offset) cache shared by all
//! processes, asking blazesym (and parsing the file) only for offsets not
//! seen before. Anonymous memory goes to the process's perf map, where JIT
//! runtimes name their code.

use std::{collections::HashMap, rc::Rc};

use blazesym::symbolize::{
    source::{Elf, Source},
    Input,
};

use super::{
    files::FileKey,
    frame::{frames_of, Frame, Frames},
    hotspot,
    process::Backing,
    unwind::{self, ProcessUnwinder},
    Symbolizer,
};

/// Frames per address (`None`: its file could not be used) and why some
/// could not.
type Resolved = (Vec<Option<Frames>>, Option<String>);

/// Where an address lies.
enum Target {
    /// At this offset of this open file.
    File(FileKey, u64),
    /// In anonymous memory: maybe JIT code named in a perf map.
    Anonymous,
    /// An interpreted Java method (its `Method*`).
    Interpreted(u64),
    /// In a file that could not be opened, for this reason.
    Unusable(String),
    /// Outside any mapping, or in one with nothing to read (the vDSO).
    Unknown,
}

impl Symbolizer {
    /// Whether `symbolize(tgid, ips)` would need no parse of a file on
    /// this thread. If it would, the file offsets no cache names are asked
    /// of the naming thread (once) and the caller tries again later.
    /// Always true without a naming thread; true too where this thread has
    /// to look itself (a file closed since, offsets the thread could not
    /// name), so that a capture never waits for good.
    pub fn ready_to_symbolize(&mut self, tgid: u32, ips: &[u64]) -> bool {
        self.take_names();
        if self.naming.is_none() {
            return true;
        }
        self.touch(tgid, 0);
        let mut misses: Vec<u64> = ips
            .iter()
            .enumerate()
            .map(|(i, &ip)| unwind::lookup_address(i, ip))
            .filter(|addr| !self.processes[&tgid].frames.contains_key(addr))
            .collect();
        misses.sort_unstable();
        misses.dedup();
        let Ok(targets) = self.targets(tgid, &misses) else {
            return true;
        };
        let mut wanted: HashMap<FileKey, Vec<u64>> = HashMap::new();
        let mut waiting = false;
        for target in targets {
            let Target::File(key, offset) = target else {
                continue;
            };
            if self.offsets.peek(&(key.clone(), offset)).is_some() {
                continue;
            }
            let naming = self.naming.as_ref().expect("checked above");
            if naming.to_ask(&key, offset) {
                wanted.entry(key).or_default().push(offset);
            } else {
                waiting |= naming.is_in_flight(&key, offset);
            }
        }
        for (key, offsets) in wanted {
            let Some((file, module, opened_via)) = self.files.duplicate(&key) else {
                // Closed since: `resolve` finds it again.
                return true;
            };
            let naming = self.naming.as_mut().expect("checked above");
            if !naming.ask(key, file, module, opened_via, offsets) {
                // The thread is gone: this one parses, as without it.
                self.naming = None;
                return true;
            }
            waiting = true;
        }
        !waiting
    }

    /// Puts the naming thread's answers into the (file, offset) cache.
    fn take_names(&mut self) {
        let Some(naming) = self.naming.as_mut() else {
            return;
        };
        loop {
            match naming.namer.answer() {
                Ok(Some(answer)) => {
                    for (key, offset, frames) in naming.take(answer) {
                        self.offsets.insert((key, offset), Rc::from(frames));
                    }
                }
                Ok(None) => return,
                // What it was asked is never answered: this thread parses,
                // as without it.
                Err(_) => {
                    self.naming = None;
                    return;
                }
            }
        }
    }

    /// Frames of sorted, distinct `addrs` of process `tgid` (touched by
    /// the caller), `None` where the file could not be used (the reason is
    /// the second value).
    pub(super) fn resolve(&mut self, tgid: u32, addrs: &[u64]) -> Result<Resolved, String> {
        let mut targets = self.targets(tgid, addrs)?;
        // An address in no known mapping may be in one made since (dlopen,
        // new JIT code): read the mappings again if the process still lives.
        if targets.iter().any(|t| matches!(t, Target::Unknown)) && self.reread_image(tgid) {
            targets = self.targets(tgid, addrs)?;
        }
        let unknown: Frames = [Frame::unknown(0)].into();
        let mut frames = vec![None; addrs.len()];
        let mut errors = Vec::new();
        // Per file, so a file is parsed once for all its offsets.
        let mut in_files: HashMap<FileKey, Vec<(usize, u64)>> = HashMap::new();
        for (i, target) in targets.into_iter().enumerate() {
            match target {
                Target::File(key, offset) => in_files.entry(key).or_default().push((i, offset)),
                // Not named (yet): "??" this time, not cached, asked again.
                Target::Anonymous => frames[i] = self.perf_map_frames(tgid, addrs[i]),
                Target::Interpreted(method) => {
                    let named = self.processes.get_mut(&tgid).and_then(|process| {
                        process.hotspot.as_mut()?.as_mut().ok()?.frames(method)
                    });
                    frames[i] = Some(named.unwrap_or_else(|| Rc::clone(&unknown)));
                }
                Target::Unusable(reason) => {
                    if !errors.contains(&reason) {
                        errors.push(reason);
                    }
                }
                Target::Unknown => frames[i] = Some(Rc::clone(&unknown)),
            }
        }
        for (key, group) in in_files {
            let key = match self.reopen(tgid, key, addrs[group[0].0]) {
                Ok(key) => key,
                Err(err) => {
                    errors.push(err);
                    continue;
                }
            };
            let offsets: Vec<u64> = group.iter().map(|&(_, offset)| offset).collect();
            match self.resolve_in_file(&key, &offsets) {
                Ok(resolved) => {
                    for (&(i, _), resolved) in group.iter().zip(resolved) {
                        frames[i] = Some(resolved);
                    }
                }
                Err(err) => errors.push(err),
            }
        }
        let error = (!errors.is_empty()).then(|| errors.join("; "));
        Ok((frames, error))
    }

    /// Where each of `addrs` lies in the mappings of `tgid`.
    fn targets(&self, tgid: u32, addrs: &[u64]) -> Result<Vec<Target>, String> {
        let image = self.processes[&tgid].image.as_ref().map_err(Clone::clone)?;
        Ok(addrs
            .iter()
            .map(|&addr| {
                if let Some(method) = hotspot::method_of(addr) {
                    return Target::Interpreted(method);
                }
                let Some((_, mapping)) = image.mapping_of(addr) else {
                    return Target::Unknown;
                };
                match (&mapping.backing, image.file_offset(addr)) {
                    (Backing::File(_), Some(Ok((key, offset)))) => {
                        Target::File(key.clone(), offset)
                    }
                    // The reason names the file.
                    (Backing::File(_), Some(Err(reason))) => Target::Unusable(reason.to_owned()),
                    (Backing::Anonymous, _) => Target::Anonymous,
                    _ => Target::Unknown,
                }
            })
            .collect())
    }

    /// `key`, or, when that file was closed since (more files were needed
    /// than may stay open), the file found again at the path of the mapping
    /// of `addr` while the process lives.
    fn reopen(&mut self, tgid: u32, key: FileKey, addr: u64) -> Result<FileKey, String> {
        if self.files.file(&key).is_some() {
            return Ok(key);
        }
        let process = self
            .processes
            .get_mut(&tgid)
            .expect("touched by the caller");
        let image = process.image.as_mut().map_err(|err| err.clone())?;
        let (index, mapping) = image.mapping_of(addr).ok_or("unmapped")?;
        let found = self.files.find_mapped(&mut self.backend, tgid, mapping);
        image.files[index] = Some(found.clone());
        found
    }

    /// Reads the mappings of `tgid` again; false when it is gone (the old
    /// ones stay).
    fn reread_image(&mut self, tgid: u32) -> bool {
        let mm = self.processes[&tgid]
            .image
            .as_ref()
            .map_or(0, |image| image.mm);
        match self.read_image(tgid, mm, true) {
            Ok(image) => {
                let process = self
                    .processes
                    .get_mut(&tgid)
                    .expect("touched by the caller");
                process.image = Ok(image);
                process.unwinder = ProcessUnwinder::new();
                process.modules.clear();
                true
            }
            Err(_) => false,
        }
    }

    /// Frames at `offsets` of the open file `key`.
    fn resolve_in_file(&mut self, key: &FileKey, offsets: &[u64]) -> Result<Vec<Frames>, String> {
        let mut frames: Vec<Option<Frames>> = offsets
            .iter()
            .map(|&offset| self.offsets.get(&(key.clone(), offset)))
            .collect();
        let missing: Vec<u64> = offsets
            .iter()
            .zip(&frames)
            .filter(|(_, frames)| frames.is_none())
            .map(|(&offset, _)| offset)
            .collect();
        if !missing.is_empty() {
            let mut fresh = self.symbolize_offsets(key, &missing)?.into_iter();
            for (&offset, frames) in offsets.iter().zip(&mut frames) {
                if frames.is_none() {
                    let resolved = fresh.next().expect("one per missing offset");
                    self.offsets
                        .insert((key.clone(), offset), Rc::clone(&resolved));
                    *frames = Some(resolved);
                }
            }
        }
        Ok(frames.into_iter().flatten().collect())
    }

    /// Asks blazesym for file `offsets` of the open file `key`.
    fn symbolize_offsets(&mut self, key: &FileKey, offsets: &[u64]) -> Result<Vec<Frames>, String> {
        let open = self.files.parsed(
            &mut self.backend,
            key,
            self.limits.parsed_files,
            self.limits.parsed_idle,
        )?;
        let symbolized = self
            .backend
            .symbolize(
                &Source::Elf(Elf::new(&open.fd_path)),
                Input::FileOffset(offsets),
            )
            .map_err(|err| open.failed(&err))?;
        Ok(symbolized
            .iter()
            .map(|symbolized| frames_of(symbolized, Some(&open.module)))
            .collect())
    }

    /// JIT code in anonymous memory, named by the process's perf map if it
    /// writes one; `None` otherwise (not an error). A JVM is asked for a
    /// fresh map, for a later try.
    fn perf_map_frames(&mut self, tgid: u32, addr: u64) -> Option<Frames> {
        let process = self
            .processes
            .get_mut(&tgid)
            .expect("touched by the caller");
        let (nspid, jvm) = process
            .image
            .as_ref()
            .map_or((tgid, false), |image| (image.nspid, image.jvm));
        if process.perf_map.lookup(addr).is_none() {
            process.perf_map.refresh(tgid, nspid);
        }
        let named = process
            .perf_map
            .lookup(addr)
            .map(|name| Frame::jitted(addr, name));
        if named.is_none() && jvm {
            self.jvm.request(tgid, nspid);
        }
        named.map(|frame| [frame].into())
    }
}
