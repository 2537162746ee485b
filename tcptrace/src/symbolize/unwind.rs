//! Unwinding a user stack the kernel copied (registers at system call
//! entry and the bytes above the stack pointer) with the binaries' CFI
//! (`.eh_frame`, else `.debug_frame`), through framehop. Frame pointers are
//! framehop's fallback where no CFI covers an address: JIT code, Go.
//!
//! This is what makes call sites work for code built the way distributions
//! build it (-O2, no frame pointers) and through libc wrappers that move the
//! stack pointer: the kernel's own frame-pointer walk loses the caller there.

use std::{fs::File, ops::Range, rc::Rc};

use framehop::{
    x86_64::{CacheX86_64, UnwindRegsX86_64, UnwinderX86_64},
    ExplicitModuleSectionInfo, FrameAddress, Module, Unwinder,
};
use object::{Object, ObjectSection, ObjectSegment, ReadCache};

use super::{
    hotspot,
    process::{Backing, Mapping},
};

/// At most this many frames per stack: the call site is near the top.
pub(super) const MAX_FRAMES: usize = 64;

/// Section data shared by every process that maps the file.
type Data = Rc<[u8]>;

/// What framehop needs of one ELF file.
pub(super) struct UnwindSections {
    /// `PT_LOAD` segments: (file range, virtual address).
    loads: Vec<(Range<u64>, u64)>,
    eh_frame: Option<(Range<u64>, Data)>,
    eh_frame_hdr: Option<(Range<u64>, Data)>,
    debug_frame: Option<Data>,
    text: Option<Range<u64>>,
    got: Option<Range<u64>>,
}

impl UnwindSections {
    /// Reads the segments and unwind sections of an open ELF file; only
    /// those sections are read, not the whole file.
    pub(super) fn read(file: &File) -> Result<Self, String> {
        let cache = ReadCache::new(file);
        let elf = object::File::parse(&cache).map_err(|err| format!("not an ELF file: {err}"))?;
        let loads = elf
            .segments()
            .map(|segment| {
                let (offset, size) = segment.file_range();
                (offset..offset + size, segment.address())
            })
            .collect();
        let svma = |section: &object::Section<'_, '_, &ReadCache<&File>>| {
            section.address()..section.address() + section.size()
        };
        let with_data = |name: &str| -> Option<(Range<u64>, Data)> {
            let section = elf.section_by_name(name)?;
            let data = section.uncompressed_data().ok()?;
            Some((svma(&section), Rc::from(&*data)))
        };
        Ok(Self {
            loads,
            eh_frame: with_data(".eh_frame"),
            eh_frame_hdr: with_data(".eh_frame_hdr"),
            debug_frame: with_data(".debug_frame").map(|(_, data)| data),
            text: elf.section_by_name(".text").map(|s| svma(&s)),
            got: elf.section_by_name(".got").map(|s| svma(&s)),
        })
    }

    /// Where virtual address 0 of the file lies when file offset `offset`
    /// is mapped at `start`.
    fn base_avma(&self, start: u64, offset: u64) -> Option<u64> {
        let (range, vaddr) = self
            .loads
            .iter()
            .find(|(range, _)| range.contains(&offset))?;
        start.checked_sub(vaddr + (offset - range.start))
    }

    fn module(&self, name: String, avma: Range<u64>, base_avma: u64) -> Module<Data> {
        let info = ExplicitModuleSectionInfo {
            base_svma: 0,
            text_svma: self.text.clone(),
            got_svma: self.got.clone(),
            eh_frame_svma: self.eh_frame.as_ref().map(|(svma, _)| svma.clone()),
            eh_frame: self.eh_frame.as_ref().map(|(_, data)| Rc::clone(data)),
            eh_frame_hdr_svma: self.eh_frame_hdr.as_ref().map(|(svma, _)| svma.clone()),
            eh_frame_hdr: self.eh_frame_hdr.as_ref().map(|(_, data)| Rc::clone(data)),
            debug_frame: self.debug_frame.clone(),
            ..ExplicitModuleSectionInfo::default()
        };
        Module::new(name, avma, base_avma, info)
    }
}

/// framehop's view of one process: a module per mapping of code.
pub(super) type ProcessUnwinder = UnwinderX86_64<Data>;

/// The framehop module of `mapping` (code of the file `file`).
pub(super) fn module_for(mapping: &Mapping, file: &UnwindSections) -> Option<Module<Data>> {
    let Backing::File(path) = &mapping.backing else {
        return None;
    };
    let base = file.base_avma(mapping.start, mapping.offset)?;
    let name = path.to_string_lossy().into_owned();
    Some(file.module(name, mapping.start..mapping.end, base))
}

/// The address to look up for the `i`-th of a stack's instruction
/// pointers: every one but the innermost is a return address, which may
/// already belong to the next line or function, so the call before it.
/// (An interpreted Java frame stands for its method, not for code.)
pub(super) fn lookup_address(i: usize, ip: u64) -> u64 {
    if i == 0 || hotspot::method_of(ip).is_some() {
        ip
    } else {
        ip.saturating_sub(1)
    }
}

/// The registers and stack bytes of one capture.
pub(super) struct Captured<'a> {
    pub(super) ip: u64,
    pub(super) sp: u64,
    pub(super) bp: u64,
    /// The stack from `sp` up.
    pub(super) stack: &'a [u8],
}

impl Captured<'_> {
    /// The word at `addr`, if the capture holds it.
    pub(super) fn word_at(&self, addr: u64) -> Option<u64> {
        let offset = usize::try_from(addr.checked_sub(self.sp)?).ok()?;
        let bytes = self.stack.get(offset..offset.checked_add(8)?)?;
        Some(u64::from_le_bytes(bytes.try_into().ok()?))
    }
}

/// One frame of an unwound stack.
pub(super) struct Unwound {
    /// The instruction pointer: a return address but for the innermost.
    pub(super) ip: u64,
    /// The frame pointer register in this frame.
    pub(super) bp: u64,
}

/// The frames of the captured stack, innermost first, until the copied
/// bytes end, a frame cannot be unwound or `MAX_FRAMES`.
pub(super) fn unwind(
    unwinder: &ProcessUnwinder,
    cache: &mut CacheX86_64,
    captured: &Captured,
) -> Vec<Unwound> {
    let mut read_stack = |addr: u64| captured.word_at(addr).ok_or(());
    let mut regs = UnwindRegsX86_64::new(captured.ip, captured.sp, captured.bp);
    let mut frames = vec![Unwound {
        ip: captured.ip,
        bp: captured.bp,
    }];
    let mut address = FrameAddress::InstructionPointer(captured.ip);
    while frames.len() < MAX_FRAMES {
        let Ok(Some(return_address)) =
            unwinder.unwind_frame(address, &mut regs, cache, &mut read_stack)
        else {
            break;
        };
        let Some(next) = FrameAddress::from_return_address(return_address) else {
            break;
        };
        frames.push(Unwound {
            ip: return_address,
            bp: regs.bp(),
        });
        address = next;
    }
    frames
}
