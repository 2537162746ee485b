//! Naming interpreted Java methods. `HotSpot`'s template interpreter runs
//! every method on the same code, so its address names none of them (the
//! JVM's perf map calls all of it "Interpreter"). What names an interpreted
//! frame is the `Method*` the interpreter keeps in the frame, three words
//! below its frame pointer (`frame::interpreter_frame_method_offset` on
//! x86-64; the interpreter always keeps a frame pointer). That word is read
//! from the captured stack when it is unwound, and the method's class,
//! name and signature are then read from the JVM's memory, at the offsets
//! the JVM publishes for debuggers in `gHotSpotVMStructs` (the table the
//! Serviceability Agent and async-profiler read), so no JVM version's
//! layout is built in.
//!
//! Written here (a page of reads): no maintained crate reads `HotSpot`'s
//! `VMStructs`.

use std::{collections::HashMap, fs::File, ops::Range, os::unix::fs::FileExt};

use object::{Object, ObjectSegment, ObjectSymbol, ReadCache};

use super::{
    frame::{Frame, Frames},
    process::Mapping,
};

/// The module of frames named this way.
pub const INTERPRETED_MODULE: &str = "[interpreted]";

/// An interpreted frame's `Method*` lies this far below its frame pointer
/// (x86-64).
const METHOD_BELOW_FP: u64 = 3 * 8;

/// An interpreted frame's address in an unwound stack is its `Method*`
/// with the top bit set (never a user address on x86-64), so stacks through
/// different interpreted methods stay different call paths.
const INTERPRETED_TAG: u64 = 1 << 63;

/// The `Method*` that `addr` in an unwound stack stands for, if it is one.
pub(super) fn method_of(addr: u64) -> Option<u64> {
    (addr & INTERPRETED_TAG != 0).then_some(addr & !INTERPRETED_TAG)
}

/// Methods remembered per JVM at most; past this they are read each time.
const MAX_METHODS: usize = 4096;
/// Entries of the JVM's tables read at most (JDK 17 has about 2,500).
const MAX_ENTRIES: u64 = 20_000;
/// Table entries read at once.
const ENTRIES_PER_READ: usize = 256;
/// The longest type, field, class, method or signature name read.
const MAX_NAME: usize = 1024;

/// One JVM: where its interpreter's code lies, and how to name its methods.
pub(super) struct HotSpot {
    memory: Memory,
    interpreter: Range<u64>,
    layout: Layout,
    /// `Method*` → its frame (`None`: unreadable, not a method).
    methods: HashMap<u64, Option<Frames>>,
}

/// Offsets of the fields followed from a `Method*` to its names, and the
/// size of the constant pool's header (its slots follow it).
struct Layout {
    method_const_method: u64,
    const_method_constants: u64,
    const_method_name_index: u64,
    const_method_signature_index: u64,
    constant_pool_holder: u64,
    constant_pool_header: u64,
    klass_name: u64,
    symbol_length: u64,
    symbol_body: u64,
}

/// Fields read from `gHotSpotVMStructs`: (type, field).
const FIELDS: [(&str, &str); 11] = [
    ("Method", "_constMethod"),
    ("ConstMethod", "_constants"),
    ("ConstMethod", "_name_index"),
    ("ConstMethod", "_signature_index"),
    ("ConstantPool", "_pool_holder"),
    ("Klass", "_name"),
    ("Symbol", "_length"),
    ("Symbol", "_body"),
    ("AbstractInterpreter", "_code"),
    ("StubQueue", "_stub_buffer"),
    ("StubQueue", "_buffer_limit"),
];

impl HotSpot {
    /// Reads what it needs of JVM `tgid`, whose `libjvm.so` is `file`
    /// mapped (among others) at `mapping`.
    pub(super) fn attach(tgid: u32, mapping: &Mapping, file: &File) -> Result<Self, String> {
        let memory = Memory(
            File::open(format!("/proc/{tgid}/mem"))
                .map_err(|err| format!("/proc/{tgid}/mem: {err}"))?,
        );
        let symbols = exported(file, mapping)?;
        let global = |name: &str| -> Result<u64, String> {
            let addr = symbols
                .get(name)
                .ok_or_else(|| format!("libjvm.so exports no {name}"))?;
            memory
                .u64_at(*addr)
                .ok_or_else(|| format!("{name} is unreadable"))
        };
        let fields = Table {
            entries: global("gHotSpotVMStructs")?,
            stride: global("gHotSpotVMStructEntryArrayStride")?,
            type_name: global("gHotSpotVMStructEntryTypeNameOffset")?,
            field_name: Some(global("gHotSpotVMStructEntryFieldNameOffset")?),
            value: global("gHotSpotVMStructEntryOffsetOffset")?,
            address: global("gHotSpotVMStructEntryAddressOffset")?,
        };
        let types = Table {
            entries: global("gHotSpotVMTypes")?,
            stride: global("gHotSpotVMTypeEntryArrayStride")?,
            type_name: global("gHotSpotVMTypeEntryTypeNameOffset")?,
            field_name: None,
            value: global("gHotSpotVMTypeEntrySizeOffset")?,
            address: 0,
        };
        let field_types: Vec<&str> = FIELDS.iter().map(|&(type_name, _)| type_name).collect();
        let found = memory.entries(&fields, &field_types);
        let field = |type_name: &str, name: &str| -> Result<(u64, u64), String> {
            found
                .get(&(type_name.to_owned(), name.to_owned()))
                .copied()
                .ok_or_else(|| format!("this JVM publishes no {type_name}::{name}"))
        };
        let offset = |type_name: &str, name: &str| field(type_name, name).map(|(value, _)| value);
        let sizes = memory.entries(&types, &["ConstantPool"]);
        let constant_pool_header = sizes
            .get(&("ConstantPool".to_owned(), String::new()))
            .map(|&(size, _)| size)
            .ok_or("this JVM publishes no size of ConstantPool")?;

        // The interpreter's code: `AbstractInterpreter::_code`, a queue of
        // stubs in one buffer.
        let (_, code_at) = field("AbstractInterpreter", "_code")?;
        let interpreter = memory
            .u64_at(code_at)
            .and_then(|queue| {
                let start = memory.u64_at(queue + offset("StubQueue", "_stub_buffer").ok()?)?;
                let len = memory.u32_at(queue + offset("StubQueue", "_buffer_limit").ok()?)?;
                Some(start..start + u64::from(len))
            })
            .filter(|code| !code.is_empty())
            .ok_or("the JVM's interpreter code is unreadable")?;
        Ok(Self {
            memory,
            interpreter,
            layout: Layout {
                method_const_method: offset("Method", "_constMethod")?,
                const_method_constants: offset("ConstMethod", "_constants")?,
                const_method_name_index: offset("ConstMethod", "_name_index")?,
                const_method_signature_index: offset("ConstMethod", "_signature_index")?,
                constant_pool_holder: offset("ConstantPool", "_pool_holder")?,
                constant_pool_header,
                klass_name: offset("Klass", "_name")?,
                symbol_length: offset("Symbol", "_length")?,
                symbol_body: offset("Symbol", "_body")?,
            },
            methods: HashMap::new(),
        })
    }

    /// The address standing for the frame at `ip` whose frame pointer is
    /// `bp`: its `Method*`, tagged, when `ip` is in the interpreter and
    /// `read_stack` (the captured stack) holds the word.
    pub(super) fn frame_address(
        &mut self,
        ip: u64,
        bp: u64,
        read_stack: impl FnOnce(u64) -> Option<u64>,
    ) -> u64 {
        if !self.interpreter.contains(&ip) {
            return ip;
        }
        let Some(method) = bp
            .checked_sub(METHOD_BELOW_FP)
            .and_then(read_stack)
            .filter(|&method| method != 0 && method & INTERPRETED_TAG == 0)
        else {
            return ip;
        };
        // Named now, while the JVM surely lives; later from the cache.
        self.frames(method);
        method | INTERPRETED_TAG
    }

    /// The frame of interpreted method `method`, `None` when it cannot be
    /// read (the JVM is gone, or the word was not a method).
    pub(super) fn frames(&mut self, method: u64) -> Option<Frames> {
        if let Some(known) = self.methods.get(&method) {
            return known.clone();
        }
        let frames = self.read_method(method).map(|name| {
            let frame = Frame {
                addr: 0,
                function: name,
                module: Some(INTERPRETED_MODULE.to_owned()),
                file: None,
                line: None,
            };
            Frames::from([frame])
        });
        if self.methods.len() < MAX_METHODS {
            self.methods.insert(method, frames.clone());
        }
        frames
    }

    /// `void pkg.Class.method(int, java.lang.String)`, as the JVM's perf
    /// map names compiled methods, so both forms of a method are one name.
    fn read_method(&self, method: u64) -> Option<String> {
        let (memory, layout) = (&self.memory, &self.layout);
        let const_method = memory.u64_at(method + layout.method_const_method)?;
        let pool = memory.u64_at(const_method + layout.const_method_constants)?;
        let holder = memory.u64_at(pool + layout.constant_pool_holder)?;
        let symbol = |at: u64| -> Option<String> {
            let symbol = memory.u64_at(at)?;
            let len = memory.u16_at(symbol + layout.symbol_length)?;
            let bytes = memory.bytes_at(symbol + layout.symbol_body, usize::from(len))?;
            String::from_utf8(bytes).ok().filter(|s| !s.is_empty())
        };
        let pool_symbol = |index_at: u64| -> Option<String> {
            let index = memory.u16_at(index_at)?;
            symbol(pool + layout.constant_pool_header + u64::from(index) * 8)
        };
        let class = symbol(holder + layout.klass_name)?;
        let name = pool_symbol(const_method + layout.const_method_name_index)?;
        let signature = pool_symbol(const_method + layout.const_method_signature_index)?;
        external_name(&class, &name, &signature)
    }
}

/// One of the JVM's self-description tables: where its entries start, their
/// size, and where in an entry its fields lie.
struct Table {
    entries: u64,
    stride: u64,
    type_name: u64,
    /// Field tables only.
    field_name: Option<u64>,
    /// The field's offset (or the type's size).
    value: u64,
    /// A static field's address (field tables only).
    address: u64,
}

/// Reads of a process's memory.
struct Memory(File);

impl Memory {
    fn bytes_at(&self, addr: u64, len: usize) -> Option<Vec<u8>> {
        if len > MAX_NAME {
            return None;
        }
        let mut bytes = vec![0; len];
        self.0.read_exact_at(&mut bytes, addr).ok()?;
        Some(bytes)
    }

    fn array_at<const N: usize>(&self, addr: u64) -> Option<[u8; N]> {
        let mut bytes = [0; N];
        self.0.read_exact_at(&mut bytes, addr).ok()?;
        Some(bytes)
    }

    fn u64_at(&self, addr: u64) -> Option<u64> {
        self.array_at(addr).map(u64::from_ne_bytes)
    }

    fn u32_at(&self, addr: u64) -> Option<u32> {
        self.array_at(addr).map(u32::from_ne_bytes)
    }

    fn u16_at(&self, addr: u64) -> Option<u16> {
        self.array_at(addr).map(u16::from_ne_bytes)
    }

    /// A NUL-terminated name.
    fn c_string_at(&self, addr: u64) -> Option<String> {
        let mut bytes = [0; 64];
        let read = self.0.read_at(&mut bytes, addr).ok()?;
        let end = bytes[..read].iter().position(|&b| b == 0)?;
        String::from_utf8(bytes[..end].to_vec()).ok()
    }

    /// The entries of `table` about `types`: (type, field) → (value,
    /// address). A type table's entries have no field (its name is empty).
    /// Entries are read `ENTRIES_PER_READ` at a time, and each distinct
    /// type name once (some 2,500 entries name a few hundred types).
    fn entries(&self, table: &Table, types: &[&str]) -> HashMap<(String, String), (u64, u64)> {
        let mut found = HashMap::new();
        let Ok(stride) = usize::try_from(table.stride) else {
            return found;
        };
        if !(8..=4096).contains(&stride) {
            return found;
        }
        // Type-name address → the name, when it is one of `types`.
        let mut names: HashMap<u64, Option<String>> = HashMap::new();
        let mut first = 0;
        while first < MAX_ENTRIES {
            let chunk = self.read_up_to(
                table.entries + first * table.stride,
                stride * ENTRIES_PER_READ,
            );
            for entry in chunk.chunks_exact(stride) {
                let word = |offset: u64| -> Option<u64> {
                    let at = usize::try_from(offset).ok()?;
                    Some(u64::from_ne_bytes(entry.get(at..at + 8)?.try_into().ok()?))
                };
                // The table ends with an entry without a type name.
                let Some(type_at) = word(table.type_name).filter(|&at| at != 0) else {
                    return found;
                };
                let type_name = names.entry(type_at).or_insert_with(|| {
                    self.c_string_at(type_at)
                        .filter(|name| types.contains(&name.as_str()))
                });
                let Some(type_name) = type_name.clone() else {
                    continue;
                };
                let field = table
                    .field_name
                    .and_then(word)
                    .and_then(|name| self.c_string_at(name))
                    .unwrap_or_default();
                let value = word(table.value).unwrap_or(0);
                let address = if table.field_name.is_some() {
                    word(table.address).unwrap_or(0)
                } else {
                    0
                };
                found.insert((type_name, field), (value, address));
            }
            if chunk.len() < stride * ENTRIES_PER_READ {
                break;
            }
            first += ENTRIES_PER_READ as u64;
        }
        found
    }

    /// Up to `len` bytes at `addr`: fewer where readable memory ends.
    fn read_up_to(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut bytes = vec![0; len];
        let read = self.0.read_at(&mut bytes, addr).unwrap_or(0);
        bytes.truncate(read);
        bytes
    }
}

/// The addresses in the process of the symbols `libjvm.so` exports: its
/// ELF `file`, one of whose segments is mapped at `mapping`.
fn exported(file: &File, mapping: &Mapping) -> Result<HashMap<String, u64>, String> {
    let cache = ReadCache::new(file);
    let elf = object::File::parse(&cache).map_err(|err| format!("libjvm.so: {err}"))?;
    // Where the file's virtual address 0 lies in the process.
    let base = elf
        .segments()
        .find_map(|segment| {
            let (offset, size) = segment.file_range();
            (offset..offset + size)
                .contains(&mapping.offset)
                .then(|| {
                    mapping
                        .start
                        .checked_sub(segment.address() + mapping.offset - offset)
                })
                .flatten()
        })
        .ok_or("libjvm.so: no segment at its mapping's offset")?;
    Ok(elf
        .dynamic_symbols()
        .filter_map(|symbol| {
            let name = symbol.name().ok()?;
            name.starts_with("gHotSpotVM")
                .then(|| (name.to_owned(), base + symbol.address()))
        })
        .collect())
}

/// The JVM's external form of a method: `(Ljava/lang/String;[I)V` of
/// `pkg/Class.run` is `void pkg.Class.run(java.lang.String, int[])`.
fn external_name(class: &str, method: &str, signature: &str) -> Option<String> {
    let (mut params, returns) = signature.strip_prefix('(')?.split_once(')')?;
    let mut types = Vec::new();
    while !params.is_empty() {
        let (java_type, rest) = java_type(params)?;
        types.push(java_type);
        params = rest;
    }
    let (returns, rest) = java_type(returns)?;
    if !rest.is_empty() {
        return None;
    }
    Some(format!(
        "{returns} {}.{method}({})",
        class.replace('/', "."),
        types.join(", ")
    ))
}

/// The first type of a descriptor, as Java writes it, and the rest.
fn java_type(descriptor: &str) -> Option<(String, &str)> {
    let dims = descriptor.bytes().take_while(|&b| b == b'[').count();
    let rest = &descriptor[dims..];
    let (base, rest) = match rest.as_bytes().first()? {
        b'L' => {
            let (class, rest) = rest[1..].split_once(';')?;
            (class.replace('/', "."), rest)
        }
        primitive => {
            let name = match primitive {
                b'B' => "byte",
                b'C' => "char",
                b'D' => "double",
                b'F' => "float",
                b'I' => "int",
                b'J' => "long",
                b'S' => "short",
                b'Z' => "boolean",
                b'V' => "void",
                _ => return None,
            };
            (name.to_owned(), &rest[1..])
        }
    };
    Some((base + &"[]".repeat(dims), rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_read_as_the_jvm_writes_methods() {
        for (class, method, descriptor, external) in [
            (
                "Client",
                "connectPerRequest",
                "(Ljava/lang/String;I)V",
                "void Client.connectPerRequest(java.lang.String, int)",
            ),
            (
                "java/net/Socket",
                "connect",
                "(Ljava/net/SocketAddress;)V",
                "void java.net.Socket.connect(java.net.SocketAddress)",
            ),
            (
                "a/B$C",
                "run",
                "([[Ljava/lang/Object;J[Z)[I",
                "int[] a.B$C.run(java.lang.Object[][], long, boolean[])",
            ),
            ("Main", "main", "()V", "void Main.main()"),
        ] {
            assert_eq!(
                external_name(class, method, descriptor).as_deref(),
                Some(external)
            );
        }
        for broken in ["", "(", "(I", "(Q)V", "(Ljava/lang/String)V", "()", "()VV"] {
            assert_eq!(external_name("A", "b", broken), None, "{broken:?}");
        }
    }

    #[test]
    fn interpreted_frames_are_tagged_apart_from_code_addresses() {
        let method = 0x7f00_1234_5678;
        assert_eq!(method_of(method | INTERPRETED_TAG), Some(method));
        assert_eq!(method_of(method), None);
    }
}
