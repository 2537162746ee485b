//! `/metrics` rendered once and shared: every scrape within `MAX_AGE` of a
//! render gets the same bytes, so that many scrapers at once (or one user
//! opening many connections) cost one render, not one each, and no copy
//! per connection (each holds a reference while it writes). The classic
//! text format and the gzip encodings are derived from that render, each
//! at most once.

use std::{
    io::Write,
    time::{Duration, Instant},
};

use bytes::Bytes;
use flate2::{write::GzEncoder, Compression};

use crate::export::prometheus::to_classic_text;

/// How old a render may be and still be served. Prometheus scrapes every
/// 15-60 s: a second of staleness is invisible to it.
pub const MAX_AGE: Duration = Duration::from_secs(1);

/// The two exposition formats a scraper may ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    OpenMetrics,
    /// Prometheus's classic text format (what a scraper gets unless it
    /// asks for `OpenMetrics`).
    Classic,
}

/// What a scrape is sent: a format, gzip-compressed or not (Prometheus
/// asks for gzip; /metrics shrinks about tenfold).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Variant {
    pub format: Format,
    pub gzip: bool,
}

impl Variant {
    /// What is rendered; the others are derived from it.
    const BASE: Self = Self {
        format: Format::OpenMetrics,
        gzip: false,
    };

    fn slot(self) -> usize {
        usize::from(self.format == Format::Classic) * 2 + usize::from(self.gzip)
    }
}

/// The last render and the variants derived from it so far.
#[derive(Default)]
pub struct RenderedMetrics {
    rendered_at: Option<Instant>,
    variants: [Option<Bytes>; 4],
}

impl RenderedMetrics {
    /// The bytes of `variant`, rendered by `render` (`OpenMetrics` text)
    /// only when the last render is older than `MAX_AGE` at `now`.
    pub fn get(
        &mut self,
        variant: Variant,
        now: Instant,
        render: impl FnOnce() -> String,
    ) -> Bytes {
        let fresh = self
            .rendered_at
            .is_some_and(|at| now.saturating_duration_since(at) < MAX_AGE);
        if !fresh {
            self.variants = Default::default();
            self.variants[Variant::BASE.slot()] = Some(Bytes::from(render()));
            self.rendered_at = Some(now);
        }
        self.derive(variant)
    }

    /// `variant` of the current render, derived now if it was not yet.
    fn derive(&mut self, variant: Variant) -> Bytes {
        if let Some(bytes) = &self.variants[variant.slot()] {
            return bytes.clone();
        }
        let bytes: Bytes = if variant.gzip {
            let plain = self.derive(Variant {
                gzip: false,
                ..variant
            });
            Bytes::from(gzip(&plain))
        } else {
            // Only the classic text is derived plain: the base is rendered.
            let base = self.derive(Variant::BASE);
            Bytes::from(to_classic_text(&String::from_utf8_lossy(&base)))
        };
        self.variants[variant.slot()] = Some(bytes.clone());
        bytes
    }
}

/// gzip at the fastest level: a render is compressed at most once a
/// second, on the daemon's only thread.
fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::with_capacity(bytes.len() / 8), Compression::fast());
    // Writing into a Vec cannot fail.
    let _ = encoder.write_all(bytes);
    encoder.finish().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    const TEXT: &str = "# TYPE a counter\na_total 1\n# EOF\n";

    fn variant(format: Format, gzip: bool) -> Variant {
        Variant { format, gzip }
    }

    #[test]
    fn scrapes_within_max_age_share_one_render() {
        let mut rendered = RenderedMetrics::default();
        let start = Instant::now();
        let mut renders = 0;
        let mut render = || {
            renders += 1;
            TEXT.to_owned()
        };
        let half = start + MAX_AGE / 2;
        let first = rendered.get(variant(Format::OpenMetrics, false), start, &mut render);
        let second = rendered.get(variant(Format::OpenMetrics, false), half, &mut render);
        let classic = rendered.get(variant(Format::Classic, false), half, &mut render);
        let classic_again = rendered.get(variant(Format::Classic, false), half, &mut render);
        let zipped = rendered.get(variant(Format::Classic, true), half, &mut render);
        assert_eq!(
            first.as_ptr(),
            second.as_ptr(),
            "the same bytes, not a copy"
        );
        assert_eq!(classic.as_ptr(), classic_again.as_ptr());
        assert_eq!(&*classic, to_classic_text(TEXT).as_bytes());
        let mut unzipped = Vec::new();
        flate2::read::GzDecoder::new(&*zipped)
            .read_to_end(&mut unzipped)
            .unwrap();
        assert_eq!(unzipped, &*classic, "gzip of the classic text");
        assert_eq!(renders, 1);
    }

    #[test]
    fn an_old_render_is_replaced_with_everything_derived_from_it() {
        let mut rendered = RenderedMetrics::default();
        let start = Instant::now();
        let mut renders = 0;
        let mut render = || {
            renders += 1;
            format!("# n {renders}\n")
        };
        let zipped = rendered.get(variant(Format::OpenMetrics, true), start, &mut render);
        let later = start + MAX_AGE;
        let plain = rendered.get(variant(Format::OpenMetrics, false), later, &mut render);
        assert_eq!(&*plain, b"# n 2\n");
        let zipped_later = rendered.get(variant(Format::OpenMetrics, true), later, &mut render);
        assert!(
            zipped.as_ptr() != zipped_later.as_ptr(),
            "derived from the new render"
        );
        assert_eq!(renders, 2);
    }
}
