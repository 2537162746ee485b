//! Reconnect loops: many short connections (or failures) to one endpoint,
//! with no growing back-off between attempts (incident 2 of docs/INCIDENTS.md).

/// Attempts below which no verdict is given.
pub const MIN_ATTEMPTS: u64 = 5;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Backoff {
    /// Gaps between attempts do not grow.
    None,
    /// Later gaps are at least twice the earlier ones.
    Growing,
}

/// Median gap between consecutive attempts in the first and second half of
/// `starts_ns` (sorted), and whether they show back-off.
#[must_use]
pub fn backoff(starts_ns: &[u64]) -> Option<(Backoff, u64, u64)> {
    if starts_ns.len() < 5 {
        return None;
    }
    let gaps: Vec<u64> = starts_ns
        .windows(2)
        .map(|w| w[1].saturating_sub(w[0]))
        .collect();
    let (first, last) = gaps.split_at(gaps.len() / 2);
    let (first, last) = (median(first), median(last));
    // Exponential back-off doubles each gap; jitter only adds to it.
    let verdict = if last >= first.saturating_mul(2) && last > 1_000_000 {
        Backoff::Growing
    } else {
        Backoff::None
    };
    Some((verdict, first, last))
}

fn median(values: &[u64]) -> u64 {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    sorted.get(sorted.len() / 2).copied().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn steady_retries_have_no_backoff() {
        let starts: Vec<u64> = (0..20).map(|i| i * 50 * MS).collect();
        assert_eq!(backoff(&starts).unwrap().0, Backoff::None);
    }

    #[test]
    fn exponential_retries_have_backoff() {
        let mut t = 0;
        let mut starts = vec![0];
        for i in 0..7 {
            t += (1 << i) * 100 * MS;
            starts.push(t);
        }
        assert_eq!(backoff(&starts).unwrap().0, Backoff::Growing);
    }

    #[test]
    fn too_few_attempts_give_no_verdict() {
        assert!(backoff(&[0, MS, 2 * MS]).is_none());
    }
}
