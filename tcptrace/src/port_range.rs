//! `net.ipv4.ip_local_port_range`, per network namespace: the ports
//! `connect()` picks from when a socket is not bound. Each namespace has
//! its own (a pod may set it with a sysctl), so the range of tcptrace's
//! namespace says nothing about a pod's.
//!
//! A `/proc/sys/net` file belongs to the namespace it was opened in, for
//! as long as it stays open: the namespace opener opens it inside each
//! namespace next to the `sock_diag` socket, and every refresh reads it
//! again, so a range changed later is seen.

use std::{fs::File, os::unix::fs::FileExt};

const SYSCTL: &str = "/proc/sys/net/ipv4/ip_local_port_range";

/// Inclusive bounds, `low <= high`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    pub low: u16,
    pub high: u16,
}

impl PortRange {
    /// The kernel's default, 32768–60999 (28,232 ports).
    pub const DEFAULT: Self = Self {
        low: 32768,
        high: 60999,
    };

    /// The range of the calling thread's network namespace.
    #[must_use]
    pub fn of_own_namespace() -> Self {
        File::open(SYSCTL)
            .ok()
            .and_then(|file| Self::read(&file))
            .unwrap_or(Self::DEFAULT)
    }

    /// Opens the sysctl of the calling thread's network namespace, to be
    /// read with [`read`](Self::read) from anywhere later.
    pub fn open_sysctl() -> std::io::Result<File> {
        File::open(SYSCTL)
    }

    /// The range as the sysctl file, opened in some namespace, says now.
    #[must_use]
    pub fn read(sysctl: &File) -> Option<Self> {
        let mut text = [0u8; 32];
        let length = sysctl.read_at(&mut text, 0).ok()?;
        Self::parse(std::str::from_utf8(&text[..length]).ok()?)
    }

    fn parse(text: &str) -> Option<Self> {
        let mut parts = text.split_whitespace().map(str::parse::<u16>);
        let (low, high) = (parts.next()?.ok()?, parts.next()?.ok()?);
        (low <= high).then_some(Self { low, high })
    }

    #[must_use]
    pub const fn contains(self, port: u16) -> bool {
        self.low <= port && port <= self.high
    }

    /// How many ports.
    #[must_use]
    pub fn size(self) -> u64 {
        u64::from(self.high - self.low) + 1
    }
}

impl std::fmt::Display for PortRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.low, self.high)
    }
}

impl serde::Serialize for PortRange {
    /// `[low, high]`, as the JSON output always had it.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        (self.low, self.high).serialize(serializer)
    }
}

impl<'de> serde::Deserialize<'de> for PortRange {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let (low, high) = <(u16, u16)>::deserialize(deserializer)?;
        if low > high {
            return Err(serde::de::Error::custom(format!(
                "port range {low}-{high} ends before it starts"
            )));
        }
        Ok(Self { low, high })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_sysctl() {
        let range = |low, high| Some(PortRange { low, high });
        assert_eq!(PortRange::parse("32768\t60999\n"), range(32768, 60999));
        assert_eq!(PortRange::parse("1024 65535"), range(1024, 65535));
        assert_eq!(PortRange::parse("9 1"), None);
        assert_eq!(PortRange::parse(""), None);
        assert_eq!(PortRange::DEFAULT.size(), 28_232);
        assert!(PortRange::DEFAULT.contains(32768) && !PortRange::DEFAULT.contains(61000));
    }

    #[test]
    fn reads_the_sysctl_of_this_namespace() {
        let file = PortRange::open_sysctl().expect("the sysctl exists on Linux");
        let range = PortRange::read(&file).expect("a range");
        assert_eq!(range, PortRange::of_own_namespace());
    }
}
