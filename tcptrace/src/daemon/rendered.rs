//! `/metrics` rendered once and shared: every scrape within `MAX_AGE` of a
//! render gets the same text, so that many scrapers at once (or one user
//! opening many connections) cost one render, not one each, and no copy
//! per connection (each holds a reference while it writes).

use std::{
    rc::Rc,
    time::{Duration, Instant},
};

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

#[derive(Default)]
pub struct RenderedMetrics {
    openmetrics: Option<(Instant, Rc<str>)>,
    classic: Option<(Instant, Rc<str>)>,
}

impl RenderedMetrics {
    /// The text in `format`, rendered by `render` (`OpenMetrics`) only when
    /// the last render is older than `MAX_AGE` at `now`.
    pub fn get(
        &mut self,
        format: Format,
        now: Instant,
        render: impl FnOnce() -> String,
    ) -> Rc<str> {
        let fresh = |slot: &Option<(Instant, Rc<str>)>| {
            slot.as_ref()
                .filter(|(at, _)| now.saturating_duration_since(*at) < MAX_AGE)
                .map(|(at, text)| (*at, Rc::clone(text)))
        };
        let (at, openmetrics) = fresh(&self.openmetrics).unwrap_or_else(|| {
            let text: Rc<str> = Rc::from(render());
            self.openmetrics = Some((now, Rc::clone(&text)));
            (now, text)
        });
        match format {
            Format::OpenMetrics => openmetrics,
            Format::Classic => match &self.classic {
                // Derived from this very render, not an older one.
                Some((classic_at, text)) if *classic_at == at => Rc::clone(text),
                _ => {
                    let text: Rc<str> = Rc::from(to_classic_text(&openmetrics));
                    self.classic = Some((at, Rc::clone(&text)));
                    text
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# TYPE a counter\na_total 1\n# EOF\n";

    #[test]
    fn scrapes_within_max_age_share_one_render() {
        let mut rendered = RenderedMetrics::default();
        let start = Instant::now();
        let mut renders = 0;
        let mut render = || {
            renders += 1;
            TEXT.to_owned()
        };
        let first = rendered.get(Format::OpenMetrics, start, &mut render);
        let second = rendered.get(Format::OpenMetrics, start + MAX_AGE / 2, &mut render);
        let classic = rendered.get(Format::Classic, start + MAX_AGE / 2, &mut render);
        let classic_again = rendered.get(Format::Classic, start + MAX_AGE / 2, &mut render);
        assert!(Rc::ptr_eq(&first, &second), "the same text, not a copy");
        assert!(Rc::ptr_eq(&classic, &classic_again));
        assert_eq!(&*classic, to_classic_text(TEXT));
        assert_eq!(renders, 1);
    }

    #[test]
    fn an_old_render_is_replaced() {
        let mut rendered = RenderedMetrics::default();
        let start = Instant::now();
        let mut renders = 0;
        let mut render = || {
            renders += 1;
            format!("# n {renders}\n")
        };
        let classic = rendered.get(Format::Classic, start, &mut render);
        let later = start + MAX_AGE;
        let openmetrics = rendered.get(Format::OpenMetrics, later, &mut render);
        assert_eq!(&*openmetrics, "# n 2\n");
        let classic_later = rendered.get(Format::Classic, later, &mut render);
        assert!(
            !Rc::ptr_eq(&classic, &classic_later),
            "derived from the new render"
        );
        assert_eq!(renders, 2);
    }
}
