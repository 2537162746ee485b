//! Tracepoint record layouts, read from tracefs at load time.
//!
//! `events/<category>/<name>/format` describes every field of a record as
//! `field:TYPE NAME[N];` `offset:O;` `size:S;` `signed:X;` (tab-separated). Layouts change between
//! kernels (`tcp_retransmit_skb` gained `err`, `tcp_send_reset` was reshaped
//! in 6.10), so nothing downstream hard-codes an offset.

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};

const CANDIDATES: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// Largest offset or size a field can have (trace records fit in a page).
const MAX_RECORD: usize = 8192;

/// One field of a tracepoint record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    pub offset: usize,
    pub size: usize,
}

/// All fields of one tracepoint, by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Format {
    pub name: String,
    pub fields: HashMap<String, Field>,
}

impl Format {
    /// Parses the text of a `format` file. Lines that are not fields are
    /// ignored; a field line that does not parse is an error naming it.
    pub fn parse(text: &str) -> Result<Self> {
        let mut format = Self::default();
        for line in text.lines() {
            let line = line.trim();
            if let Some(name) = line.strip_prefix("name:") {
                name.trim().clone_into(&mut format.name);
            } else if line.starts_with("field:") {
                let (name, field) =
                    parse_field(line).with_context(|| format!("bad field line `{line}`"))?;
                format.fields.insert(name, field);
            }
        }
        if format.fields.is_empty() {
            bail!("no fields in tracepoint format");
        }
        Ok(format)
    }

    /// The field called `name` with exactly `size` bytes.
    pub fn field(&self, name: &str, size: usize) -> Result<Field> {
        let field = self
            .fields
            .get(name)
            .with_context(|| format!("tracepoint {} has no field `{name}`", self.name))?;
        if field.size != size {
            bail!(
                "tracepoint {} field `{name}` is {} bytes, expected {size}",
                self.name,
                field.size
            );
        }
        Ok(*field)
    }

    /// Like `field`, but `None` when the field does not exist on this kernel.
    pub fn optional_field(&self, name: &str, size: usize) -> Result<Option<Field>> {
        if self.fields.contains_key(name) {
            self.field(name, size).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Bytes from the record start to the end of its last field.
    #[must_use]
    pub fn record_len(&self) -> usize {
        // Fields are bounded by `MAX_RECORD` at parse time: no overflow.
        self.fields
            .values()
            .map(|f| f.offset + f.size)
            .max()
            .unwrap_or(0)
    }
}

fn parse_field(line: &str) -> Result<(String, Field)> {
    let mut declaration = None;
    let mut offset = None;
    let mut size = None;
    for part in line.split(';').map(str::trim) {
        if let Some(decl) = part.strip_prefix("field:") {
            declaration = Some(decl);
        } else if let Some(value) = part.strip_prefix("offset:") {
            offset = Some(value.parse::<usize>().context("offset")?);
        } else if let Some(value) = part.strip_prefix("size:") {
            size = Some(value.parse::<usize>().context("size")?);
        }
    }
    let declaration = declaration.context("no declaration")?;
    let (offset, size) = (offset.context("no offset")?, size.context("no size")?);
    // Trace records live in a page-sized buffer; anything beyond is corrupt.
    if offset > MAX_RECORD || size > MAX_RECORD {
        bail!("offset {offset} or size {size} beyond a trace record ({MAX_RECORD} bytes)");
    }
    // The name is the last word of the declaration, minus any array suffix:
    // `const void * skaddr`, `__u8 saddr[4]`, `__data_loc char[] name`.
    let last = declaration
        .rsplit(|c: char| c.is_whitespace() || c == '*')
        .next()
        .unwrap_or_default();
    let name = last.split('[').next().unwrap_or_default();
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        bail!("cannot find the field name");
    }
    Ok((name.to_owned(), Field { offset, size }))
}

/// The tracefs mount, mounting it when it is not mounted yet.
pub fn tracefs_root() -> Result<PathBuf> {
    for candidate in CANDIDATES {
        let events = Path::new(candidate).join("events");
        if events.is_dir() {
            return Ok(PathBuf::from(candidate));
        }
        // Mounted, but not ours to read (tracefs is mode 0700).
        if let Err(err) = std::fs::read_dir(candidate) {
            if err.kind() == std::io::ErrorKind::PermissionDenied {
                bail!("{candidate} is not readable ({err}): tracefs needs root or CAP_DAC_READ_SEARCH");
            }
        }
    }
    mount_tracefs()?;
    if Path::new(CANDIDATES[0]).join("events").is_dir() {
        return Ok(PathBuf::from(CANDIDATES[0]));
    }
    bail!(
        "tracefs is not mounted and could not be mounted at {}; \
         mount it with `mount -t tracefs tracefs /sys/kernel/tracing`",
        CANDIDATES[0]
    )
}

fn mount_tracefs() -> Result<()> {
    let target = std::ffi::CString::new(CANDIDATES[0])?;
    let fstype = std::ffi::CString::new("tracefs")?;
    // SAFETY: plain mount(2) with valid NUL-terminated strings and no data.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        bail!("mounting tracefs at {}: {err}", CANDIDATES[0]);
    }
    Ok(())
}

/// Reads and parses `events/<category>/<name>/format`.
pub fn read_format(root: &Path, category: &str, name: &str) -> Result<Format> {
    let path = root.join("events").join(category).join(name).join("format");
    let text = fs::read_to_string(&path).with_context(|| {
        format!(
            "tracepoint {category}:{name} is not available on this kernel ({} unreadable)",
            path.display()
        )
    })?;
    Format::parse(&text).with_context(|| format!("parsing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SET_STATE_6_18: &str = include_str!("fixtures/inet_sock_set_state-6.18.format");

    #[test]
    fn parses_every_field_with_offsets() {
        let format = Format::parse(SET_STATE_6_18).unwrap();
        assert_eq!(format.name, "inet_sock_set_state");
        assert_eq!(format.field("skaddr", 8).unwrap().offset, 8);
        assert_eq!(format.field("newstate", 4).unwrap().offset, 20);
        assert_eq!(format.field("daddr_v6", 16).unwrap().offset, 56);
        assert_eq!(format.field("common_flags", 1).unwrap().offset, 2);
        assert_eq!(format.record_len(), 72);
    }

    #[test]
    fn wrong_size_and_missing_field_are_errors() {
        let format = Format::parse(SET_STATE_6_18).unwrap();
        let err = format.field("skaddr", 4).unwrap_err().to_string();
        assert!(err.contains("8 bytes, expected 4"), "{err}");
        assert!(format.field("nonexistent", 4).is_err());
        assert_eq!(format.optional_field("nonexistent", 4).unwrap(), None);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(Format::parse("").is_err());
        assert!(Format::parse("field:int x;\toffset:abc;\tsize:4;").is_err());
        assert!(Format::parse("field:;\toffset:1;\tsize:4;").is_err());
        assert!(Format::parse("field:int x;\tsize:4;").is_err());
        let huge = "field:int x;\toffset:18446744073709551615;\tsize:4;";
        assert!(
            Format::parse(huge).is_err(),
            "an offset beyond a record is rejected"
        );
    }
}
