//! Fuzzes the wire decoder's entry points: `Decoder::decode` on any payload and subject (the
//! input path of every message) and `decode_stored_entry` (what reads blocks back). Neither
//! may panic, overflow the stack or allocate without bound; an accepted entry must be storable
//! and read back to the same bytes, and a refusal must say why.
#![no_main]

use chrono::{TimeZone, Utc};
use libfuzzer_sys::fuzz_target;
use trace_core::{decode_stored_entry, encode_entry_vec, Decoder, Incoming};

/// Subjects the first input byte picks from: the three kinds, no type, nothing matched,
/// and the awkward tokens nats-server lets through.
const SUBJECTS: [&str; 8] = [
    "game.agent.npc1.agent.decision",
    "game.story.graph",
    "game.state.world.player.move",
    "game.agent.npc\u{1}.x\u{7f}",
    "trace.alerts.warn",
    "other",
    "game.agent.",
    "",
];

fuzz_target!(|data: &[u8]| {
    let (subject, payload) = match data.split_first() {
        Some((first, rest)) => (SUBJECTS[usize::from(*first) % SUBJECTS.len()], rest),
        None => (SUBJECTS[0], data),
    };
    let received_at = Utc
        .with_ymd_and_hms(2026, 6, 1, 3, 4, 5)
        .single()
        .expect("a valid time");
    let decoder = Decoder::default();
    match decoder.decode(&Incoming {
        subject,
        payload,
        received_at,
        fallback_id: None,
    }) {
        Ok(entry) => {
            let bytes = encode_entry_vec(&entry);
            let stored = decode_stored_entry(&mut &bytes[..])
                .unwrap_or_else(|e| panic!("accepted but unreadable from storage: {e}: {entry:?}"));
            assert_eq!(encode_entry_vec(&stored), bytes, "stored form differs");
            serde_json::to_string(&entry).expect("JSON output");
        }
        Err(e) => assert!(!e.detail.trim().is_empty(), "a refusal without a reason"),
    }
    // the payload as a block's concatenated entries: each read advances, errors stop
    let mut rest = payload;
    while !rest.is_empty() && decode_stored_entry(&mut rest).is_ok() {}
});
