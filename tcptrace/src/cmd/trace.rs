use std::{io, path::PathBuf, time::Duration};

use anyhow::{Context, Result};
use clap::Args;
use tcptrace::{
    findings::DEFAULT_IDLE_THRESHOLD,
    output::{detached_sink, BufferedLines},
    probe::{
        parse_stack_interval, ProbeOptions, DEFAULT_SOCKET_MAP_ENTRIES, DEFAULT_STACK_RING_BYTES,
        INTERACTIVE_STACK_BURST, INTERACTIVE_STACK_INTERVAL, SOCKET_MAP_ENTRIES_RANGE,
    },
    session::{self, SessionOptions},
};

use super::{output::OutputArgs, SessionFilterArgs};

#[derive(Debug, Args)]
pub struct TraceArgs {
    /// Stop after this long (`30s`, `2m`, `1h`); default: until Ctrl-C.
    #[arg(short, long, value_parser = parse_duration)]
    duration: Option<Duration>,
    #[command(flatten)]
    filter: SessionFilterArgs,
    #[command(flatten)]
    output: OutputArgs,
    /// Also save the session to FILE (gzip-compressed when it ends in
    /// `.gz`), for `tcptrace report FILE` to replay later or elsewhere.
    #[arg(short, long, value_name = "FILE")]
    write: Option<PathBuf>,
    /// Ring buffer size in MiB (rounded up to a power of two). The default
    /// holds about 400 ms of events at 40,000 connections a second: a
    /// reader that the load keeps off the CPU that long loses nothing.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=1024))]
    ring_buffer_mib: u32,
    /// Stack ring buffer size in MiB: user stack captures (up to 4 KiB
    /// each) travel apart from the events; when it fills, call sites are
    /// lost (and counted), never events.
    #[arg(long, default_value_t = DEFAULT_STACK_RING_BYTES / (1024 * 1024),
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    stack_ring_buffer_mib: u32,
    /// Sockets the kernel can track at once; beyond it, new sockets are
    /// counted as untracked.
    #[arg(long, default_value_t = DEFAULT_SOCKET_MAP_ENTRIES,
          value_parser = clap::value_parser!(u32).range(i64::from(*SOCKET_MAP_ENTRIES_RANGE.start())..=i64::from(*SOCKET_MAP_ENTRIES_RANGE.end())))]
    socket_map_entries: u32,
    /// Do not capture user stacks (call sites) at connect, listen and close.
    #[arg(long)]
    no_stacks: bool,
    /// A process making more than 64 calls of a kind (connect, close,
    /// accept) back to back gets one stack captured per this interval;
    /// the calls in between show its last call site, and the summary
    /// counts them as reused. `0` captures every call [default: 1ms].
    #[arg(long, value_parser = parse_stack_interval)]
    stack_interval: Option<Duration>,
    /// Do not ask JVMs for their perf maps (`jcmd PID Compiler.perfmap`
    /// through the attach socket); Java methods then stay unnamed.
    #[arg(long)]
    no_jvm_perf_map: bool,
    /// Connections idle this long with keepalive off are reported, and
    /// established connections reset by a peer silent this long are lost
    /// [default: 30s].
    #[arg(long, value_parser = parse_duration)]
    idle_threshold: Option<Duration>,
    /// No live lines: only the diagnosis report at the end.
    #[arg(long)]
    report_only: bool,
}

pub(super) fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text)
        .map_err(|e| format!("`{text}` is not a duration like 30s, 2m or 1h: {e}"))?;
    if duration.is_zero() {
        return Err("the duration must be longer than zero".to_owned());
    }
    Ok(duration)
}

pub fn run(args: TraceArgs) -> Result<()> {
    args.output.check()?;
    let (filter, containers, warnings) = args.filter.into_filter();
    for warning in warnings {
        eprintln!("tcptrace: warning: {warning}");
    }
    let options = SessionOptions {
        duration: args.duration,
        filter,
        probe: ProbeOptions {
            ring_bytes: args.ring_buffer_mib * 1024 * 1024,
            stack_ring_bytes: args.stack_ring_buffer_mib * 1024 * 1024,
            capture_stacks: !args.no_stacks,
            stack_interval_ms: u32::try_from(
                args.stack_interval
                    .unwrap_or(INTERACTIVE_STACK_INTERVAL)
                    .as_millis(),
            )
            .unwrap_or(u32::MAX),
            stack_burst: INTERACTIVE_STACK_BURST,
            // Nothing is printed per event: one record per socket will do.
            summary: args.report_only,
            accept_hook: true,
            socket_map_entries: args.socket_map_entries,
        },
        report_only: args.report_only,
        idle_threshold: args.idle_threshold.unwrap_or(DEFAULT_IDLE_THRESHOLD),
        no_jvm_perf_map: args.no_jvm_perf_map,
        containers,
        write: args.write,
    };
    // Lines written by a thread of its own: the session's reader keeps up
    // with the kernel, and a reader of standard output that stops reading
    // does not stop the session (see `output::detached_sink`).
    let (mut sink, output) =
        detached_sink::spawn(args.output.sink(BufferedLines::new(io::stdout())))
            .context("starting the output thread")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(session::run(options, &mut sink));
    drop(sink);
    let (written, dropped) = output.settle(STDOUT_GRACE);
    if !written {
        eprintln!(
            "tcptrace: standard output was not read: {dropped} events dropped from it, and the \
             end of the session (its summary and report among them) still unwritten after \
             {STDOUT_GRACE:?}"
        );
    } else if dropped > 0 {
        eprintln!(
            "tcptrace: standard output was not read fast enough: {dropped} events dropped from it"
        );
    }
    result.map(|_| ())
}

/// How long the end of a session waits for a slow reader of its output.
const STDOUT_GRACE: Duration = Duration::from_secs(2);

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("soon")
            .unwrap_err()
            .contains("not a duration"));
    }
}
