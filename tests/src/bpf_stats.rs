//! `kernel.bpf_stats_enabled` set for a test, restored on drop: while it
//! is 1 the kernel counts each program's runs (`run_cnt`), which tcptrace
//! exports (`tcptrace_bpf_program_runs_total`).

pub struct BpfStats(String);

impl BpfStats {
    const PATH: &'static str = "/proc/sys/kernel/bpf_stats_enabled";

    #[must_use]
    pub fn enable() -> Self {
        let before = std::fs::read_to_string(Self::PATH).expect("bpf_stats_enabled");
        std::fs::write(Self::PATH, "1").expect("enable bpf_stats");
        Self(before)
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = std::fs::write(Self::PATH, self.0.trim());
    }
}
