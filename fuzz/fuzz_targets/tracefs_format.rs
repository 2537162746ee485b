//! Arbitrary text as a tracefs `format` file: `Format::parse` must return
//! an error or a format, never panic; a format that parses is then tried as
//! each of the four records `RecordLayouts::from_formats` reads (the
//! fixtures in the other positions), and a layout that is accepted must
//! keep every field inside the bytes tcptrace copies, and decode records
//! without reading beyond them.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tcptrace::{
    event::{
        decode,
        layout::{Endpoints, RecordLayouts},
    },
    probe::tracefs::{Field, Format},
};
use tcptrace_common::{EVENT_SIZE, RAW_RECORD_LEN};
use tcptrace_fuzz::formats;

fn inside(field: Field, what: &str) {
    assert!(
        field
            .offset
            .checked_add(field.size)
            .is_some_and(|end| end <= RAW_RECORD_LEN),
        "{what} at {}+{} lies beyond the {RAW_RECORD_LEN} bytes tcptrace copies",
        field.offset,
        field.size
    );
}

fn endpoints_inside(endpoints: &Endpoints) {
    match *endpoints {
        Endpoints::Split {
            family,
            sport,
            dport,
            saddr,
            daddr,
            saddr_v6,
            daddr_v6,
        } => {
            for (field, what) in [
                (family, "family"),
                (sport, "sport"),
                (dport, "dport"),
                (saddr, "saddr"),
                (daddr, "daddr"),
                (saddr_v6, "saddr_v6"),
                (daddr_v6, "daddr_v6"),
            ] {
                inside(field, what);
            }
        }
        Endpoints::SockAddr { saddr, daddr } => {
            inside(saddr, "saddr");
            inside(daddr, "daddr");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(format) = Format::parse(&text) else {
        return;
    };
    let _ = format.record_len();
    for position in 0..4 {
        let mut formats = formats().kernel_6_18.clone();
        formats[position] = format.clone();
        let Ok(layouts) =
            RecordLayouts::from_formats(&formats[0], &formats[1], &formats[2], &formats[3])
        else {
            continue;
        };
        let s = &layouts.state;
        for (field, what) in [
            (s.skaddr, "skaddr"),
            (s.oldstate, "oldstate"),
            (s.newstate, "newstate"),
            (s.protocol, "protocol"),
        ] {
            inside(field, what);
        }
        endpoints_inside(&s.endpoints);
        for record in [
            &layouts.retransmit,
            &layouts.send_reset,
            &layouts.receive_reset,
        ] {
            inside(record.skaddr, "skaddr");
            if let Some(state) = record.state {
                inside(state, "state");
            }
            endpoints_inside(&record.endpoints);
            assert!(record.len <= RAW_RECORD_LEN);
        }
        let _ = layouts.kernel_globals();
        // A record of each kind, its raw bytes taken from the input.
        for kind in 1u16..=4 {
            let mut record = [0u8; EVENT_SIZE];
            record[..2].copy_from_slice(&kind.to_ne_bytes());
            let raw_len = u16::try_from(RAW_RECORD_LEN).expect("small");
            record[2..4].copy_from_slice(&raw_len.to_ne_bytes());
            let raw = EVENT_SIZE - RAW_RECORD_LEN;
            let n = data.len().min(RAW_RECORD_LEN);
            record[raw..raw + n].copy_from_slice(&data[..n]);
            let _ = decode(&record, &layouts);
        }
    }
});
