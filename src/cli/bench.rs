//! `vault bench`: the measurement is the application layer's
//! ([`vault::objects::bench`]); this shows its progress and prints its report.

use indicatif::{ProgressBar, ProgressStyle};
use vault::objects::bench::{Progress, Report};

/// A progress bar on standard error.
pub(crate) struct Bar(ProgressBar);

impl Bar {
    pub(crate) fn new(shown: bool) -> Self {
        Self(if shown {
            ProgressBar::new(0).with_style(
                ProgressStyle::with_template("{spinner} measuring [{bar:30}] {pos}/{len} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            )
        } else {
            ProgressBar::hidden()
        })
    }
}

impl Progress for Bar {
    fn begin(&self, steps: u64) {
        self.0.set_length(steps);
    }

    fn message(&self, what: &str) {
        self.0.set_message(what.to_owned());
    }

    fn inc(&self) {
        self.0.inc(1);
    }

    fn finish(&self) {
        self.0.finish_and_clear();
    }
}

/// The report as a table for people.
pub(crate) fn table(r: &Report) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Seal and open through the managed provider vs raw ring AES-256-GCM (GB/s)"
    );
    let _ = writeln!(
        out,
        "{:>9}  {:>9} {:>9} {:>6}  {:>9} {:>9} {:>6}",
        "size", "raw seal", "seal", "ratio", "raw open", "open", "ratio"
    );
    for s in &r.sizes {
        let _ = writeln!(
            out,
            "{:>9}  {:>9.3} {:>9.3} {:>5.2}x  {:>9.3} {:>9.3} {:>5.2}x",
            human(s.size),
            s.raw_seal_gbps,
            s.seal_gbps,
            s.seal_ratio,
            s.raw_open_gbps,
            s.open_gbps,
            s.open_ratio
        );
    }
    let st = &r.stream_1gib;
    let _ = writeln!(
        out,
        "\nStreaming seal of {} (64 KiB segments) vs raw ring sealing it in place as one message (GB/s)",
        human(st.bytes)
    );
    let _ = writeln!(
        out,
        "  raw ring in place, one thread {:.3}   stream read at any offset and sealed on {} threads {:.3}  {:.2}x",
        st.raw_in_place_gbps, st.threads, st.stream_parallel_gbps, st.ratio
    );
    let _ = writeln!(
        out,
        "  from a reader: stream read on one thread, sealed on another {:.3}  {:.2}x",
        st.stream_pipelined_gbps, st.pipelined_ratio
    );
    let _ = writeln!(
        out,
        "  one thread, the same 64 KiB reads: raw ring {:.3}  stream {:.3}  {:.2}x   (stream through Write {:.3})",
        st.raw_seal_gbps, st.stream_seal_gbps, st.same_reads_ratio, st.stream_write_gbps
    );
    let f = &r.floor_1kib;
    let _ = writeln!(out, "\n1 KiB seal vs the floor of its parts (ns)");
    let _ = writeln!(
        out,
        "  random 2 x {:.0} ({}; getrandom(2) {:.0}) + derivation {:.0} (suite 1's hkdf {:.0}) + key wrap {:.0} + aead {:.0} = floor {:.0}; seal {:.0}; floor/seal {:.2}",
        f.os_random_ns,
        f.random_source,
        f.os_random_syscall_ns,
        f.derive_ns,
        f.hkdf_ns,
        f.key_wrap_ns,
        f.aead_1kib_ns,
        f.floor_ns,
        f.seal_ns,
        f.ratio
    );
    let _ = writeln!(out, "\n1 KiB objects per second");
    for o in &r.objects_1kib {
        let _ = writeln!(
            out,
            "  {:>2} thread(s): seal {:>10.0}/s   open {:>10.0}/s",
            o.threads, o.seal_per_sec, o.open_per_sec
        );
    }
    let _ = writeln!(
        out,
        "\nKey context, 10 pairs, parse + validate + canonicalise: {:.0} ns",
        r.context_10_pairs_ns
    );
    out
}

fn human(size: usize) -> String {
    match size {
        s if s >= 1 << 30 => format!("{} GiB", s >> 30),
        s if s >= 1 << 20 => format!("{} MiB", s >> 20),
        s if s >= 1 << 10 => format!("{} KiB", s >> 10),
        s => format!("{s} B"),
    }
}
