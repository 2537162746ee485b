//! The columns of `tcptrace top`: their headings, their text for a row
//! (the terminal view and `--batch` print the same) and the ones it sorts
//! by.

use std::{fmt::Write as _, time::Duration};

use clap::ValueEnum;

use super::rows::Row;
use crate::output::Escaped;

/// What the rows are ranked by (most first).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Column {
    /// Connections opened per second (`connect()` and accepted).
    #[value(name = "conn")]
    Connections,
    /// Timewait sockets its active closes left.
    #[value(name = "time-wait")]
    TimeWait,
    /// Sockets it holds in `CLOSE_WAIT`.
    #[value(name = "close-wait")]
    CloseWait,
    /// Age of its oldest `CLOSE_WAIT` socket.
    #[value(name = "close-wait-age")]
    CloseWaitOldest,
    /// Failed `connect()` per second.
    #[value(name = "connect-failures")]
    ConnectFailures,
    /// Retransmits per second.
    #[value(name = "retransmits")]
    Retransmits,
    /// Connections closed per second.
    #[value(name = "closed")]
    Closed,
    /// Resets sent and received per second.
    #[value(name = "resets")]
    Resets,
}

impl Column {
    /// In the order `s` cycles through them; keys `1`..`8` pick one.
    pub const ALL: [Self; 8] = [
        Self::Connections,
        Self::TimeWait,
        Self::CloseWait,
        Self::CloseWaitOldest,
        Self::ConnectFailures,
        Self::Retransmits,
        Self::Closed,
        Self::Resets,
    ];

    fn index(self) -> usize {
        Self::ALL.iter().position(|c| *c == self).unwrap_or(0)
    }

    #[must_use]
    pub fn next(self) -> Self {
        Self::ALL[(self.index() + 1) % Self::ALL.len()]
    }

    #[must_use]
    pub fn previous(self) -> Self {
        Self::ALL[(self.index() + Self::ALL.len() - 1) % Self::ALL.len()]
    }

    /// The column picked by key `1`..`8`.
    #[must_use]
    pub fn numbered(digit: char) -> Option<Self> {
        let n = digit.to_digit(10)? as usize;
        n.checked_sub(1).and_then(|i| Self::ALL.get(i).copied())
    }

    /// The heading of the column shown for it.
    #[must_use]
    pub fn heading(self) -> &'static str {
        HEADINGS[self.shown_at()]
    }

    /// Where it is among `HEADINGS`.
    #[must_use]
    pub fn shown_at(self) -> usize {
        match self {
            Self::Connections => 3,
            Self::Closed => 5,
            Self::TimeWait => 6,
            Self::CloseWait => 7,
            Self::CloseWaitOldest => 8,
            Self::ConnectFailures => 9,
            Self::Retransmits => 10,
            Self::Resets => 11,
        }
    }

    /// The value a row is ranked by.
    #[must_use]
    pub fn sort_key(self, row: &Row, interval: Duration) -> f64 {
        let last = &row.last;
        match self {
            Self::Connections => rate(last.opened, interval),
            Self::Closed => rate(last.closed, interval),
            Self::ConnectFailures => rate(last.connect_failures, interval),
            Self::Retransmits => rate(last.retransmits, interval),
            Self::Resets => rate(last.resets, interval),
            Self::TimeWait => count(row.held.time_wait),
            Self::CloseWait => count(row.held.close_wait),
            Self::CloseWaitOldest => row.held.close_wait_oldest_s.unwrap_or(-1.0),
        }
    }
}

/// The table's headings, in order.
pub const HEADINGS: [&str; 12] = [
    "PID",
    "PROCESS",
    "CONTAINER",
    "CONN/s",
    "CONNS",
    "CLOSE/s",
    "TIME_WAIT",
    "CLOSE_WAIT",
    "CW_OLDEST",
    "CFAIL/s",
    "RETRANS/s",
    "RST/s",
];

/// Widths of the columns (the process name is the kernel's 15 bytes; a
/// program's row shows its lowest pid and its number of processes,
/// `1234x3`).
pub const WIDTHS: [u16; 12] = [10, 15, 16, 8, 8, 8, 9, 10, 9, 8, 9, 7];

/// Columns whose text is aligned left.
#[must_use]
pub fn left_aligned(index: usize) -> bool {
    matches!(index, 1 | 2)
}

#[expect(clippy::cast_precision_loss, reason = "counts as rates for display")]
fn rate(n: u64, interval: Duration) -> f64 {
    let secs = interval.as_secs_f64();
    if secs > 0.0 {
        n as f64 / secs
    } else {
        0.0
    }
}

#[expect(clippy::cast_precision_loss, reason = "counts for ranking")]
fn count(n: u64) -> f64 {
    n as f64
}

/// A row's text, one cell per heading. Process and container names are
/// untrusted: escaped, and spaces shown as `_` so that a column never
/// splits in two.
#[must_use]
pub fn cells(row: &Row, interval: Duration) -> [String; HEADINGS.len()] {
    let (last, held) = (&row.last, &row.held);
    let per_second = |n| format!("{:.1}", rate(n, interval));
    let name = |text: &str| {
        if text.is_empty() {
            "-".to_owned()
        } else {
            Escaped(text).to_string().replace(' ', "_")
        }
    };
    [
        if row.processes > 1 {
            format!("{}x{}", row.pid, row.processes)
        } else {
            row.pid.to_string()
        },
        name(&row.name()),
        name(&row.container),
        per_second(last.opened),
        row.total.opened.to_string(),
        per_second(last.closed),
        held.time_wait.to_string(),
        held.close_wait.to_string(),
        held.close_wait_oldest_s.map_or_else(|| "-".to_owned(), age),
        per_second(last.connect_failures),
        per_second(last.retransmits),
        per_second(last.resets),
    ]
}

/// An age in seconds as `45s`, `12m05s`, `3h02m`.
#[must_use]
pub fn age(secs: f64) -> String {
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "a non-negative age in whole seconds"
    )]
    let s = secs.max(0.0) as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

/// The table as plain text: headings, then one line per row.
pub fn write_table(
    out: &mut impl std::io::Write,
    rows: &[&Row],
    interval: Duration,
) -> std::io::Result<()> {
    let line = |cells: &[String]| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let width = usize::from(WIDTHS[i]);
            if i > 0 {
                text.push(' ');
            }
            // Writing to a String does not fail.
            let _ = if left_aligned(i) {
                write!(text, "{cell:<width$}")
            } else {
                write!(text, "{cell:>width$}")
            };
        }
        text.trim_end().to_owned()
    };
    let headings: Vec<String> = HEADINGS.iter().map(|h| (*h).to_owned()).collect();
    writeln!(out, "{}", line(&headings))?;
    for row in rows {
        writeln!(out, "{}", line(&cells(row, interval)))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sort_columns_cycle_and_are_numbered() {
        assert_eq!(Column::Connections.next(), Column::TimeWait);
        assert_eq!(Column::Connections.previous(), Column::Resets);
        assert_eq!(Column::numbered('1'), Some(Column::Connections));
        assert_eq!(Column::numbered('6'), Some(Column::Retransmits));
        assert_eq!(Column::numbered('0'), None);
        assert_eq!(Column::numbered('9'), None);
        for column in Column::ALL {
            assert!(!column.heading().is_empty());
        }
        assert_eq!(Column::CloseWaitOldest.heading(), "CW_OLDEST");
    }

    #[test]
    fn ages() {
        assert_eq!(age(0.4), "0s");
        assert_eq!(age(59.9), "59s");
        assert_eq!(age(65.0), "1m05s");
        assert_eq!(age(3.0 * 3600.0 + 120.0), "3h02m");
    }
}
