//! `tcptrace report FILE`: a recording run through the same pipeline, the
//! same filters and the same outputs as the session that wrote it, with
//! what only that machine could tell taken from the recording.
//!
//! Two passes over the file: the call sites, names and end dump are
//! written last (they are known only then) but the events need them, and
//! a recording can be larger than memory.

use std::{path::Path, time::Duration};

use anyhow::{bail, Result};

use super::{
    reader::{Line, Reader},
    Dump, End, Entry, Header, RecordedEvent,
};
use crate::{
    callsite::CallSites,
    clock::WallClock,
    container::Containers,
    filter::{Filter, Workloads},
    live_births::{LiveBirths, LiveRecord},
    output::{write_start, Escaped, Shown, Sink},
    pipeline::{split_dump, EventCounts, Pipeline},
    session::SessionCounts,
    snapshot::Snapshot,
    table::Cgroups,
};

/// How to replay.
#[derive(Clone, Debug, Default)]
pub struct ReplayOptions {
    /// The criteria given to `report`: each replaces the recorded one of
    /// its kind (a recording cannot show what its session's filter kept
    /// out of the kernel, so narrowing is what this is for).
    pub filter: Filter,
    /// Only the report, no event lines.
    pub report_only: bool,
    /// Instead of the session's.
    pub idle_threshold: Option<Duration>,
}

/// What the first pass learns: everything but the events.
#[derive(Default)]
struct Outline {
    start: Dump,
    call_sites: CallSites,
    cgroups: Vec<super::RecordedCgroup>,
    births: LiveBirths,
    end: Option<End>,
    events: u64,
}

/// Replays `path` into `sink`, as the session that wrote it would have
/// written it with `options`; returns the session's counts.
pub fn replay(path: &Path, options: &ReplayOptions, sink: &mut dyn Sink) -> Result<SessionCounts> {
    let (header, outline) = outline(path)?;
    // On stderr: the output stays what the session printed.
    eprintln!("tcptrace: replaying {}: {header}", path.display());
    let events_outlined = outline.events;
    let (mut pipeline, start, end) = pipeline_for(&header, outline, options)?;
    if !options.report_only {
        write_start(sink, &start.sockets, |s| pipeline.shows_existing(s))?;
    }

    let clock = WallClock::with_offset(header.clock_offset_ns);
    let mut last_ns = 0;
    let (mut reader, _) = Reader::open(path)?;
    while let Some(line) = reader.next::<Entry>(false)? {
        let Line::Parsed(Entry::Event(RecordedEvent { event, cgroup })) = line else {
            continue;
        };
        last_ns = last_ns.max(event.ts_ns);
        pipeline.replay_event(&event, cgroup, &mut |seen| {
            if options.report_only {
                return Ok(());
            }
            sink.event(seen.event, &Shown::of(seen, clock))
        })?;
    }
    if let Some(first) = &reader.unreadable.first {
        eprintln!(
            "tcptrace: warning: {}: {} lines unreadable (first at {first}); findings are \
             marked incomplete",
            path.display(),
            reader.unreadable.lines,
            first = Escaped(first),
        );
    }
    let end = end.unwrap_or_else(|| {
        eprintln!(
            "tcptrace: warning: {} has no end (its session was killed, or its disk filled): \
             no end-of-session socket dump, call sites or counters; findings about live \
             sockets are missing",
            path.display()
        );
        End {
            now_ns: last_ns,
            dump: Dump::default(),
            counts: SessionCounts {
                counts: EventCounts {
                    events: events_outlined,
                    ..EventCounts::default()
                },
                ..SessionCounts::default()
            },
        }
    });
    report(&mut pipeline, end, reader.unreadable.lines, sink)
}

/// The summary and the report, against the recording's end.
fn report(
    pipeline: &mut Pipeline,
    end: End,
    unreadable_lines: u64,
    sink: &mut dyn Sink,
) -> Result<SessionCounts> {
    if let Some(cgroups) = pipeline.cgroups.as_mut() {
        cgroups.set_recorded_pids(end.dump.processes.iter().map(|p| (p.pid, p.cgroup)));
    }
    let (all, mut owned) = split_dump(&pipeline.filter, end.dump.sockets);
    pipeline.retain_workloads(&mut owned);
    let recorded = end.counts;
    // The kernel's records, counted before summary records were unfolded
    // (the recording's events are the unfolded ones).
    pipeline.counts.events = recorded.counts.events;
    pipeline.counts.decode_errors = recorded.counts.decode_errors + unreadable_lines;
    let summary = SessionCounts {
        counts: pipeline.counts,
        ..recorded
    };
    sink.summary(&summary)?;
    let report = pipeline.report_with(&all, &owned, summary.elapsed, &summary.kernel, end.now_ns);
    sink.report(&report)?;
    sink.flush()?;
    Ok(summary)
}

/// A pipeline that knows what the recording's session knew; the start
/// dump, and the end.
fn pipeline_for(
    header: &Header,
    outline: Outline,
    options: &ReplayOptions,
) -> Result<(Pipeline, Snapshot, Option<End>)> {
    let (filter, judge_workloads) = narrowed(&header.filter, &options.filter)?;
    let workloads = if judge_workloads {
        Workloads::new(&filter, None)
    } else {
        // The session's own verdicts: its cgroup paths cannot be judged
        // here.
        Workloads::with_verdicts(
            &filter,
            outline
                .cgroups
                .iter()
                .filter_map(|c| Some((c.key, c.selected?))),
        )
    };
    let containers = Containers::recorded(
        outline
            .cgroups
            .into_iter()
            .map(|c| (c.key, c.labels, c.v1_path))
            .collect(),
    );
    let mut cgroups = Cgroups::recorded(containers);
    cgroups.set_recorded_pids(outline.start.processes.iter().map(|p| (p.pid, p.cgroup)));
    let mut pipeline = Pipeline::replaying(
        filter,
        &outline.start.sockets,
        outline.call_sites,
        cgroups,
        workloads,
        outline.births,
    );
    pipeline.label_events = !options.report_only;
    pipeline.set_idle_threshold(
        options
            .idle_threshold
            .unwrap_or(Duration::from_millis(header.idle_threshold_ms)),
    );
    Ok((pipeline, outline.start.sockets, outline.end))
}

/// The first pass: the header, and every entry but the events.
fn outline(path: &Path) -> Result<(Header, Outline)> {
    let (mut reader, header) = Reader::open(path)?;
    let mut outline = Outline::default();
    let mut sites = Vec::new();
    while let Some(line) = reader.next::<Entry>(true)? {
        match line {
            Line::Event => outline.events += 1,
            Line::Parsed(entry) => match entry {
                Entry::Header(_) | Entry::Event(_) => {}
                Entry::Start(dump) => outline.start = dump,
                Entry::CallSite { pid, stack, site } => {
                    sites.push((crate::table::StackRef { pid, stack }, site));
                }
                Entry::Cgroup(cgroup) => outline.cgroups.push(cgroup),
                Entry::Birth(birth) => outline.births.insert(
                    birth.netns,
                    birth.inode,
                    LiveRecord {
                        stack: birth.stack,
                        established_ns: birth.established_ns,
                        close_wait_ns: birth.close_wait_ns,
                        eof_stack: birth.eof_stack,
                    },
                ),
                Entry::End(end) => outline.end = Some(end),
            },
        }
    }
    outline.call_sites = CallSites::recorded(sites);
    Ok((header, outline))
}

/// The recorded filter with each criterion `given` replacing its own, and
/// whether workloads are to be judged from the recorded names (a workload
/// criterion was given) rather than by the session's own verdicts.
fn narrowed(recorded: &Filter, given: &Filter) -> Result<(Filter, bool)> {
    if let Some(path) = given.cgroups.iter().find(|c| c.parse::<u64>().is_err()) {
        bail!(
            "--cgroup {path}: a recording is judged by cgroup id, pod, container or namespace; \
             cgroup paths need the live cgroup tree (give them to `trace --write`)"
        );
    }
    let judge_workloads = given.by_workload();
    let mut filter = Filter {
        pids: pick(&given.pids, &recorded.pids),
        comms: pick(&given.comms, &recorded.comms),
        ports: pick(&given.ports, &recorded.ports),
        ..recorded.clone()
    };
    if judge_workloads {
        filter.namespaces.clone_from(&given.namespaces);
        filter.pods.clone_from(&given.pods);
        filter.containers.clone_from(&given.containers);
        filter.cgroups.clone_from(&given.cgroups);
    }
    Ok((filter, judge_workloads))
}

/// `given` when it says anything, else `recorded`.
fn pick<T: Clone>(given: &[T], recorded: &[T]) -> Vec<T> {
    if given.is_empty() { recorded } else { given }.to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_criteria_replace_the_recorded_ones_of_their_kind() {
        let recorded = Filter {
            ports: vec![80],
            pods: vec!["web".into()],
            cgroups: vec!["/kubepods".into()],
            ..Filter::default()
        };
        let given = Filter {
            comms: vec!["curl".into()],
            ..Filter::default()
        };
        let (filter, judge) = narrowed(&recorded, &given).unwrap();
        assert_eq!(filter.ports, [80]);
        assert_eq!(filter.comms, ["curl"]);
        assert_eq!(filter.pods, ["web"]);
        assert!(!judge, "the session's own verdicts apply");

        let given = Filter {
            containers: vec!["api".into()],
            cgroups: vec!["1234".into()],
            ..Filter::default()
        };
        let (filter, judge) = narrowed(&recorded, &given).unwrap();
        assert!(judge);
        assert!(filter.pods.is_empty());
        assert_eq!(filter.containers, ["api"]);
        assert_eq!(filter.cgroups, ["1234"]);

        let given = Filter {
            cgroups: vec!["/kubepods/besteffort".into()],
            ..Filter::default()
        };
        let err = narrowed(&recorded, &given).unwrap_err().to_string();
        assert!(
            err.contains("cgroup paths need the live cgroup tree"),
            "{err}"
        );
    }
}
