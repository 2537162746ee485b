//! A task name (`comm`, NUL-padded bytes) in a serialized record: as text
//! when it is what the kernel holds for a text name (UTF-8, then only
//! NULs), else as its raw bytes, so any name round-trips exactly.

use core::fmt;

use serde::{
    de::{self, SeqAccess, Visitor},
    Deserializer, Serializer,
};

use crate::TASK_COMM_LEN;

pub fn serialize<S: Serializer>(comm: &[u8; TASK_COMM_LEN], s: S) -> Result<S::Ok, S::Error> {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    let padded = comm[end..].iter().all(|&b| b == 0);
    match core::str::from_utf8(&comm[..end]) {
        Ok(text) if padded && end < TASK_COMM_LEN => s.serialize_str(text),
        _ => s.serialize_bytes(comm),
    }
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; TASK_COMM_LEN], D::Error> {
    d.deserialize_any(CommVisitor)
}

struct CommVisitor;

impl<'de> Visitor<'de> for CommVisitor {
    type Value = [u8; TASK_COMM_LEN];

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "a task name of at most {} bytes, as text or bytes",
            TASK_COMM_LEN - 1
        )
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
        if text.len() >= TASK_COMM_LEN || text.as_bytes().contains(&0) {
            return Err(E::invalid_value(de::Unexpected::Str(text), &self));
        }
        let mut comm = [0; TASK_COMM_LEN];
        comm[..text.len()].copy_from_slice(text.as_bytes());
        Ok(comm)
    }

    fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<Self::Value, E> {
        bytes
            .try_into()
            .map_err(|_| E::invalid_length(bytes.len(), &self))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut comm = [0; TASK_COMM_LEN];
        for (i, byte) in comm.iter_mut().enumerate() {
            *byte = seq
                .next_element()?
                .ok_or_else(|| de::Error::invalid_length(i, &self))?;
        }
        if seq.next_element::<u8>()?.is_some() {
            return Err(de::Error::invalid_length(TASK_COMM_LEN + 1, &self));
        }
        Ok(comm)
    }
}
