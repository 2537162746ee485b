//! From addresses of a live process to frames: normalize each address to a
//! file and offset, then answer from the (file, offset) cache shared by all
//! processes, asking blazesym (and parsing the file) only for offsets not
//! seen before. The vDSO comes symbolized from the normalizer; anonymous
//! memory goes to the process's perf map, where JIT runtimes name their code.

use std::{
    path::{Path, PathBuf},
    rc::Rc,
};

use blazesym::{
    normalize::{NormalizeOpts, Normalizer, Reason, UserMeta, UserOutput},
    symbolize::{
        source::{Elf, Process, Source},
        Input, Symbolized,
    },
    Pid,
};

use super::{
    files::{FileKey, MAX_PROBES},
    frame::{frames_of, Frame, Frames},
    Symbolizer,
};

/// Frames per address (`None`: its file could not be used) and why some
/// could not.
type Resolved = (Vec<Option<Frames>>, Option<String>);

/// What an address normalized to.
enum Target {
    /// An offset in this file (path in the process's mount namespace).
    Elf(PathBuf),
    /// Already symbolized by the normalizer (the vDSO).
    Frames(Frames),
    /// Anonymous memory: maybe JIT code named in a perf map.
    Anonymous,
    Unknown,
}

impl From<UserMeta<'_>> for Target {
    fn from(meta: UserMeta<'_>) -> Self {
        match meta {
            UserMeta::Elf(elf) => Self::Elf(elf.path),
            UserMeta::Sym(sym) => Self::Frames(frames_of(&Symbolized::Sym(sym), None)),
            UserMeta::Unknown(unknown) if unknown.reason == Reason::MissingComponent => {
                Self::Anonymous
            }
            _ => Self::Unknown,
        }
    }
}

/// Normalizes sorted, distinct `addrs` of `tgid`; with `map_files`, files
/// are named by their `/proc/<tgid>/map_files/` entry rather than their path.
pub(super) fn normalize<'a>(
    normalizer: &'a Normalizer,
    tgid: u32,
    addrs: &[u64],
    map_files: bool,
) -> blazesym::Result<UserOutput<'a>> {
    let opts = NormalizeOpts {
        sorted_addrs: true,
        map_files,
        ..NormalizeOpts::default()
    };
    normalizer.normalize_user_addrs_opts(Pid::from(tgid), addrs, &opts)
}

impl Symbolizer {
    /// Frames of sorted, distinct `addrs` of live process `tgid`, `None`
    /// where the file could not be used (the reason is the second value).
    pub(super) fn resolve(&mut self, tgid: u32, addrs: &[u64]) -> Result<Resolved, String> {
        // blazesym reads pid 0 as "self": never symbolize the tracer instead.
        if tgid == 0 {
            return Err("tgid 0 is not a user process".to_owned());
        }
        let normalized =
            normalize(&self.normalizer, tgid, addrs, false).map_err(|err| format!("{err:#}"))?;
        let outputs = normalized.outputs;
        let targets: Vec<Target> = normalized.meta.into_iter().map(Target::from).collect();
        // Indexes into `addrs` by target.
        let mut members = vec![Vec::new(); targets.len()];
        for (i, &(_, target)) in outputs.iter().enumerate() {
            members[target].push(i);
        }

        let unknown: Frames = [Frame::unknown(0)].into();
        let mut frames = vec![None; addrs.len()];
        let mut errors = Vec::new();
        for (target, members) in targets.iter().zip(&members) {
            match target {
                Target::Frames(symbolized) => {
                    for &i in members {
                        frames[i] = Some(Rc::clone(symbolized));
                    }
                }
                Target::Unknown => {
                    for &i in members {
                        frames[i] = Some(Rc::clone(&unknown));
                    }
                }
                Target::Anonymous => {
                    let anon: Vec<u64> = members.iter().map(|&i| addrs[i]).collect();
                    for (&i, resolved) in members.iter().zip(self.perf_map(tgid, &anon)) {
                        frames[i] = Some(resolved.unwrap_or_else(|| Rc::clone(&unknown)));
                    }
                }
                Target::Elf(path) => {
                    let at: Vec<(u64, u64)> =
                        members.iter().map(|&i| (addrs[i], outputs[i].0)).collect();
                    match self.resolve_in_file(tgid, path, &at) {
                        Ok(resolved) => {
                            for (&i, resolved) in members.iter().zip(resolved) {
                                frames[i] = Some(resolved);
                            }
                        }
                        Err(err) => errors.push(format!("{}: {err}", path.display())),
                    }
                }
            }
        }
        let error = (!errors.is_empty()).then(|| errors.join("; "));
        Ok((frames, error))
    }

    /// Frames of `at` = (address, file offset) pairs of `tgid` in the file
    /// the process maps at `path`.
    fn resolve_in_file(
        &mut self,
        tgid: u32,
        path: &Path,
        at: &[(u64, u64)],
    ) -> Result<Vec<Frames>, String> {
        if at.is_empty() {
            return Ok(Vec::new());
        }
        // A few addresses to check the file with: one may be a stray word
        // (e.g. in data, which relocations change) rather than code.
        let probes = &at[..at.len().min(MAX_PROBES)];
        let key = self
            .files
            .find(&mut self.backend, &self.normalizer, tgid, path, probes)?;
        let mut frames: Vec<Option<Frames>> = at
            .iter()
            .map(|&(_, offset)| self.offsets.get(&(key.clone(), offset)))
            .collect();
        let missing: Vec<u64> = at
            .iter()
            .zip(&frames)
            .filter(|(_, frames)| frames.is_none())
            .map(|(&(_, offset), _)| offset)
            .collect();
        if !missing.is_empty() {
            let mut fresh = self.symbolize_offsets(&key, &missing)?.into_iter();
            for (&(_, offset), frames) in at.iter().zip(&mut frames) {
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
    /// writes one (`/tmp/perf-<pid>.map`); `None` where nothing is known.
    fn perf_map(&self, tgid: u32, addrs: &[u64]) -> Vec<Option<Frames>> {
        let mut process = Process::new(Pid::from(tgid));
        process.map_files = false;
        let Ok(symbolized) = self
            .backend
            .symbolize(&Source::Process(process), Input::AbsAddr(addrs))
        else {
            return vec![None; addrs.len()];
        };
        symbolized
            .iter()
            .map(|symbolized| {
                matches!(symbolized, Symbolized::Sym(_)).then(|| frames_of(symbolized, None))
            })
            .collect()
    }
}
