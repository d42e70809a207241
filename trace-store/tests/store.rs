//! Store tests on real sled databases in temporary directories.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use trace_core::{Category, Cursor, EventId, Order, Query, Severity, TraceEntry};
use trace_store::{AppendBatch, QuarantineRecord, Store, StoreConfig};

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 6, 1, 12, 0, 0)
        .single()
        .expect("valid time")
}

/// A realistic event: `i` decides type, source, player, session, severity.
fn event(i: u64, at: DateTime<Utc>) -> TraceEntry {
    let types = [
        "player.move",
        "player.attack",
        "state.changed",
        "agent.decision",
        "system.error",
    ];
    let t = types[(i % 5) as usize];
    let mut e = TraceEntry::new(t, ["npc1", "graph", "world"][(i % 3) as usize]);
    e.ts = at + chrono::Duration::milliseconds(i as i64);
    e.id = EventId::derived(e.ts.timestamp_millis() as u64, &i.to_be_bytes());
    e.player = Some(format!("p{}", i % 10));
    e.session = Some(format!("s{}", i % 4));
    e.severity = if t == "system.error" {
        Severity::Error
    } else {
        Severity::Info
    };
    e.metrics.insert("latency_ms".into(), (i % 50) as f64);
    e.data = rmpv::Value::Map(vec![
        ("x".into(), rmpv::Value::from(i % 100)),
        ("zone".into(), rmpv::Value::from(format!("zone-{}", i % 7))),
    ]);
    e
}

/// Appends `events` as one batch at `t0()`, as the recorder writes a batch.
fn append(store: &Store, events: &[TraceEntry]) {
    store
        .append_at(
            AppendBatch {
                entries: events,
                ..Default::default()
            },
            t0(),
        )
        .expect("append");
}

fn small_cfg(dir: &std::path::Path) -> StoreConfig {
    StoreConfig {
        block_events: 64,
        ..StoreConfig::at(dir)
    }
}

fn all(store: &Store, mut q: Query) -> Vec<TraceEntry> {
    let mut out = Vec::new();
    q.limit = Some(97);
    loop {
        let page = store.query(&q).expect("query");
        out.extend(page.entries);
        match page.next_cursor {
            Some(c) => q.cursor = Some(c),
            None => return out,
        }
    }
}

#[test]
fn filters_order_and_paging_are_exact() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open_at(small_cfg(dir.path()), t0()).expect("open");
    let events: Vec<TraceEntry> = (0..1000).map(|i| event(i, t0())).collect();
    // in uneven batches, so tail blocks are rewritten and sealed at odd places
    for chunk in events.chunks(37) {
        store
            .append_at(
                AppendBatch {
                    entries: chunk,
                    ..Default::default()
                },
                t0(),
            )
            .expect("append");
    }
    store.flush().expect("flush");

    let everything = all(&store, Query::default());
    assert_eq!(everything.len(), 1000);
    assert!(
        everything
            .windows(2)
            .all(|w| w[0].order_key() > w[1].order_key()),
        "newest first"
    );
    let mut ids: Vec<_> = everything.iter().map(|e| e.id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 1000, "each entry exactly once across pages");

    let oldest = all(
        &store,
        Query {
            order: Order::OldestFirst,
            ..Query::default()
        },
    );
    assert!(
        oldest
            .windows(2)
            .all(|w| w[0].order_key() < w[1].order_key()),
        "oldest first"
    );
    assert_eq!(oldest.len(), 1000);

    let count = |q: Query| all(&store, q).len();
    let expect = |f: &dyn Fn(&TraceEntry) -> bool| events.iter().filter(|e| f(e)).count();
    assert_eq!(
        count(Query {
            event_type: Some("player.move".into()),
            ..Query::default()
        }),
        200
    );
    assert_eq!(
        count(Query {
            event_type: Some("player.*".into()),
            ..Query::default()
        }),
        400
    );
    assert_eq!(
        count(Query {
            source: Some("graph".into()),
            ..Query::default()
        }),
        expect(&|e| e.source == "graph")
    );
    assert_eq!(
        count(Query {
            category: Some(Category::PlayerAction),
            ..Query::default()
        }),
        400
    );
    assert_eq!(
        count(Query {
            severity: Some(Severity::Warn),
            ..Query::default()
        }),
        200
    );
    assert_eq!(
        count(Query {
            player: Some("p3".into()),
            ..Query::default()
        }),
        100
    );
    assert_eq!(
        count(Query {
            session: Some("s1".into()),
            ..Query::default()
        }),
        250
    );
    assert_eq!(
        count(Query {
            player: Some("p3".into()),
            session: Some("s1".into()),
            ..Query::default()
        }),
        expect(&|e| e.player.as_deref() == Some("p3") && e.session.as_deref() == Some("s1"))
    );
    let since = t0() + chrono::Duration::milliseconds(100);
    let until = t0() + chrono::Duration::milliseconds(350);
    assert_eq!(
        count(Query {
            since: Some(since),
            until: Some(until),
            ..Query::default()
        }),
        250
    );
    assert_eq!(
        count(Query {
            player: Some("nobody".into()),
            ..Query::default()
        }),
        0
    );

    // a limit is a limit, and the cursor continues exactly after it
    let page = store
        .query(&Query {
            limit: Some(7),
            ..Query::default()
        })
        .expect("query");
    assert_eq!(page.entries.len(), 7);
    assert_eq!(page.next_cursor, page.entries.last().map(Cursor::after));
    assert_eq!(page.entries[0].id, everything[0].id);

    // summaries let a selective query skip blocks
    let page = store
        .query(&Query {
            player: Some("nobody".into()),
            ..Query::default()
        })
        .expect("query");
    assert!(page.blocks_skipped > 0 && page.blocks_read == 0, "{page:?}");
}

#[test]
fn get_explain_and_quarantine() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open_at(small_cfg(dir.path()), t0()).expect("open");
    let root = event(1, t0());
    let mut mid = event(2, t0());
    mid.parent = Some(root.id);
    let mut leaf = event(3, t0());
    leaf.parent = Some(mid.id);
    let filler: Vec<_> = (10..300).map(|i| event(i, t0())).collect();
    let q = QuarantineRecord {
        received_at: t0(),
        subject: "game.agent.x.y".into(),
        kind: "malformed".into(),
        reason: "truncated".into(),
        stream_seq: Some(9),
        raw: vec![0x82, 0xa4],
    };
    store
        .append_at(
            AppendBatch {
                entries: &[root.clone(), mid.clone()],
                quarantined: std::slice::from_ref(&q),
                checkpoint: None,
            },
            t0(),
        )
        .expect("append");
    append(&store, &filler);
    store
        .append_at(
            AppendBatch {
                entries: &[leaf.clone()],
                ..Default::default()
            },
            t0(),
        )
        .expect("append");
    assert_eq!(store.get(&mid.id).expect("get"), Some(mid.clone()));
    assert_eq!(store.get(&EventId::new_at(t0())).expect("get"), None);
    let chain = store.explain(&leaf.id).expect("explain");
    assert_eq!(
        chain.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![leaf.id, mid.id, root.id]
    );
    let (total, records) = store.quarantine(10).expect("quarantine");
    assert_eq!(total, 1);
    assert_eq!(records, vec![q]);
    assert!(store.has_quarantined(9).expect("lookup"));
    assert!(!store.has_quarantined(10).expect("lookup"));
    let unknown = EventId::new_at(t0());
    let found = store
        .contains_ids(&[root.id, leaf.id, unknown])
        .expect("contains");
    assert!(found.contains(&root.id) && found.contains(&leaf.id) && !found.contains(&unknown));
}

#[test]
fn one_process_per_store_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _first = Store::open_at(small_cfg(dir.path()), t0()).expect("open");
    match Store::open_at(small_cfg(dir.path()), t0()) {
        Err(trace_store::StoreError::Locked(p)) => assert_eq!(p, dir.path()),
        Err(other) => panic!("expected Locked, got {other}"),
        Ok(_) => panic!("a second store on the same directory must be refused"),
    }
}

#[test]
fn reopen_keeps_everything_and_the_watermark() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = Store::open_at(small_cfg(dir.path()), t0()).expect("open");
        let events: Vec<_> = (0..500).map(|i| event(i, t0())).collect();
        store
            .append_at(
                AppendBatch {
                    entries: &events,
                    quarantined: &[],
                    checkpoint: Some(("rec", 500)),
                },
                t0(),
            )
            .expect("append");
        store.flush().expect("flush");
        // dropped without sealing: the next open must recover the unsealed segment
    }
    let store =
        Store::open_at(small_cfg(dir.path()), t0() + chrono::Duration::seconds(5)).expect("reopen");
    assert_eq!(store.watermark("rec"), 500);
    assert_eq!(store.watermark("other"), 0);
    assert_eq!(store.info().events, 500);
    assert_eq!(all(&store, Query::default()).len(), 500);
    let more: Vec<_> = (500..600).map(|i| event(i, t0())).collect();
    store
        .append_at(
            AppendBatch {
                entries: &more,
                quarantined: &[],
                checkpoint: Some(("rec", 600)),
            },
            t0(),
        )
        .expect("append");
    assert_eq!(store.watermark("rec"), 600);
    assert_eq!(all(&store, Query::default()).len(), 600);
}

#[test]
fn retention_by_age_deletes_segments_and_frees_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = StoreConfig {
        segment_window: Duration::from_secs(60),
        max_age: Duration::from_secs(300),
        ..small_cfg(dir.path())
    };
    let store = Store::open_at(cfg, t0()).expect("open");
    // ten minutes of traffic, one batch a minute: ten segments
    for minute in 0..10 {
        let now = t0() + chrono::Duration::minutes(minute);
        let events: Vec<_> = (0..2000)
            .map(|i| event(minute as u64 * 10_000 + i, now))
            .collect();
        store
            .append_at(
                AppendBatch {
                    entries: &events,
                    quarantined: &[],
                    checkpoint: Some(("rec", minute as u64)),
                },
                now,
            )
            .expect("append");
        store.flush().expect("flush");
    }
    let before = store.info();
    assert!(before.segments >= 10, "{before:?}");
    let disk_before = dir_size(dir.path());
    let report = store
        .maintain_at(t0() + chrono::Duration::minutes(10))
        .expect("maintain");
    assert!(report.deleted_for_age >= 4, "{report:?}");
    let after = store.info();
    let disk_after = dir_size(dir.path());
    assert!(after.events < before.events);
    assert!(
        disk_after * 10 < disk_before * 7,
        "disk must really shrink: {disk_before} -> {disk_after}"
    );
    // nothing older than max_age is left
    let oldest = all(
        &store,
        Query {
            order: Order::OldestFirst,
            limit: Some(1),
            ..Query::default()
        },
    );
    assert!(oldest[0].ts >= t0() + chrono::Duration::minutes(4));
    // the watermark survives its segments
    assert_eq!(store.watermark("rec"), 9);
}

#[test]
fn retention_by_disk_budget_keeps_the_newest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let budget = 3 * 1024 * 1024;
    let cfg = StoreConfig {
        max_disk_bytes: budget,
        ..small_cfg(dir.path())
    };
    let store = Store::open_at(cfg, t0()).expect("open");
    for round in 0..40u64 {
        let events: Vec<_> = (0..2000)
            .map(|i| {
                let mut e = event(
                    round * 10_000 + i,
                    t0() + chrono::Duration::seconds(round as i64),
                );
                // poorly compressible payload so the store grows fast
                e.data = rmpv::Value::Binary(
                    (0..200)
                        .map(|b| ((b * 7919 + i * 31 + round) % 251) as u8)
                        .collect(),
                );
                e
            })
            .collect();
        append(&store, &events);
        store.flush().expect("flush");
        store.maintain_at(t0()).expect("maintain");
    }
    let disk = dir_size(dir.path());
    assert!(
        disk < 2 * budget,
        "store holds {disk} bytes on a {budget} budget"
    );
    let newest = all(
        &store,
        Query {
            limit: Some(1),
            ..Query::default()
        },
    );
    assert!(
        newest[0].ts >= t0() + chrono::Duration::seconds(39),
        "the newest events are kept"
    );
    let oldest = all(
        &store,
        Query {
            order: Order::OldestFirst,
            limit: Some(1),
            ..Query::default()
        },
    );
    assert!(
        oldest[0].ts > t0() + chrono::Duration::seconds(5),
        "the oldest are gone"
    );
}

fn dir_size(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let m = entry.metadata().expect("metadata");
        total += if m.is_dir() {
            dir_size(&entry.path())
        } else {
            m.len()
        };
    }
    total
}

#[test]
fn a_corrupt_block_is_skipped_not_fatal() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = Store::open_at(small_cfg(dir.path()), t0()).expect("open");
        let events: Vec<_> = (0..640).map(|i| event(i, t0())).collect();
        append(&store, &events);
        store.flush().expect("flush");
    }
    // flip bytes inside one stored block, behind the store's back
    let seg = std::fs::read_dir(dir.path().join("segments"))
        .expect("segments")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.join("sealed.mp").exists() || p.join("db").exists())
        .expect("a segment");
    {
        let db = sled::open(seg.join("db")).expect("open segment db");
        let mut key = [b'b'; 9];
        key[1..].copy_from_slice(&3u64.to_be_bytes());
        let mut value = db.get(key).expect("read").expect("block 3 exists").to_vec();
        let mid = value.len() / 2;
        value[mid] ^= 0xff;
        db.insert(key, value).expect("write");
        db.flush().expect("flush");
    }
    let store = Store::open_at(small_cfg(dir.path()), t0()).expect("reopen");
    let got = all(&store, Query::default());
    assert_eq!(
        got.len(),
        640 - 64,
        "exactly the corrupt block's entries are missing"
    );
    // verify names it by location; repair removes it; then all is clean
    let seg_name = seg
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .expect("name");
    let report = store.verify(false).expect("verify");
    assert_eq!(report.corrupt.len(), 1, "{report:?}");
    assert_eq!(
        (report.corrupt[0].segment.as_str(), report.corrupt[0].block),
        (seg_name.as_str(), 3)
    );
    assert_eq!(report.corrupt[0].events, 64);
    assert_eq!(
        all(&store, Query::default()).len(),
        640 - 64,
        "verify only reads"
    );
    let repaired = store.verify(true).expect("repair");
    assert_eq!(repaired.repaired, 1);
    assert!(store.verify(false).expect("verify").corrupt.is_empty());
    assert_eq!(all(&store, Query::default()).len(), 640 - 64);
}

#[test]
fn startup_with_a_damaged_store_recovers_what_is_intact() {
    let dir = tempfile::tempdir().expect("tempdir");
    // four segments of 100 events each (a restart seals the open one)
    for round in 0..4u64 {
        let store = Store::open_at(small_cfg(dir.path()), t0()).expect("open");
        let events: Vec<_> = (round * 100..round * 100 + 100)
            .map(|i| event(i, t0()))
            .collect();
        append(&store, &events);
        store.flush().expect("flush");
    }
    let mut segs: Vec<_> = std::fs::read_dir(dir.path().join("segments"))
        .expect("segments")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("sealed.mp").exists())
        .collect();
    segs.sort();
    assert!(segs.len() >= 3, "{segs:?}");
    // the first loses its summary file (a cache: rebuilt from its database) ...
    std::fs::write(segs[0].join("sealed.mp"), b"\xc1 not msgpack").expect("garble");
    // ... the second its database (unreadable: set aside, not fatal)
    std::fs::remove_file(segs[1].join("sealed.mp")).expect("rm");
    std::fs::remove_dir_all(segs[1].join("db")).expect("rm db");
    std::fs::write(segs[1].join("db"), b"not a database").expect("garble");
    let store = Store::open_at(small_cfg(dir.path()), t0()).expect("a damaged store still opens");
    let got = all(&store, Query::default());
    assert_eq!(got.len(), 300, "the three intact segments' events");
    let aside = segs[1].with_extension("damaged");
    assert!(
        aside.exists(),
        "the unreadable segment is kept aside for inspection"
    );
    drop(store);
    let store = Store::open_at(small_cfg(dir.path()), t0()).expect("reopen");
    assert_eq!(all(&store, Query::default()).len(), 300, "and stays so");
}

#[test]
fn retention_running_beside_appends_never_deletes_the_segment_being_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = StoreConfig {
        max_disk_bytes: 1024 * 1024,
        ..small_cfg(dir.path())
    };
    let store = std::sync::Arc::new(Store::open_at(cfg, t0()).expect("open"));
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let maintainer = {
        let (store, done) = (store.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                store.maintain_at(t0()).expect("maintain");
            }
        })
    };
    let mut last = None;
    for round in 0..200u64 {
        let events: Vec<_> = (0..300)
            .map(|i| {
                let mut e = event(
                    round * 10_000 + i,
                    t0() + chrono::Duration::seconds(round as i64),
                );
                e.data = rmpv::Value::Binary(
                    (0..100)
                        .map(|b| ((b * 31 + i * 7 + round) % 253) as u8)
                        .collect(),
                );
                e
            })
            .collect();
        append(&store, &events);
        store.flush().expect("flush");
        last = events.last().map(|e| e.id);
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    maintainer.join().expect("maintainer thread");
    let last = last.expect("appended");
    assert!(
        store.get(&last).expect("get").is_some(),
        "the newest event must survive retention"
    );
    let newest = all(
        &store,
        Query {
            limit: Some(1),
            ..Query::default()
        },
    );
    assert_eq!(newest[0].id, last);
}

#[test]
fn scan_visits_matching_entries_oldest_first_across_overlapping_blocks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open_at(small_cfg(dir.path()), t0()).expect("open");
    // two interleaved streams appended one after the other: their blocks overlap in time
    let evens: Vec<_> = (0..600)
        .filter(|i| i % 2 == 0)
        .map(|i| event(i, t0()))
        .collect();
    let odds: Vec<_> = (0..600)
        .filter(|i| i % 2 == 1)
        .map(|i| event(i, t0()))
        .collect();
    append(&store, &evens);
    append(&store, &odds);
    let mut seen = Vec::new();
    let stats = store
        .scan(&Query::default(), |e| {
            seen.push(e);
            std::ops::ControlFlow::Continue(())
        })
        .expect("scan");
    assert_eq!(seen.len(), 600);
    assert_eq!(stats.entries, 600);
    assert!(
        seen.windows(2).all(|w| w[0].order_key() < w[1].order_key()),
        "exact time order"
    );
    let mut players = 0;
    store
        .scan(
            &Query {
                player: Some("p3".into()),
                ..Query::default()
            },
            |e| {
                assert_eq!(e.player.as_deref(), Some("p3"));
                players += 1;
                std::ops::ControlFlow::Continue(())
            },
        )
        .expect("scan");
    assert_eq!(players, 60);
    let mut first_ten = 0;
    store
        .scan(&Query::default(), |_| {
            first_ten += 1;
            if first_ten == 10 {
                std::ops::ControlFlow::Break(())
            } else {
                std::ops::ControlFlow::Continue(())
            }
        })
        .expect("scan");
    assert_eq!(first_ten, 10);
}

#[test]
fn forget_player_removes_them_everywhere_and_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = StoreConfig {
        segment_window: Duration::from_secs(60),
        ..small_cfg(dir.path())
    };
    {
        let store = Store::open_at(cfg.clone(), t0()).expect("open");
        // three segments, the player in all of them, and a pending tail at the end
        for minute in 0..3 {
            let now = t0() + chrono::Duration::minutes(minute);
            let events: Vec<_> = (0..250)
                .map(|i| event(minute as u64 * 1000 + i, now))
                .collect();
            store
                .append_at(
                    AppendBatch {
                        entries: &events,
                        ..Default::default()
                    },
                    now,
                )
                .expect("append");
        }
        let before = all(
            &store,
            Query {
                player: Some("p3".into()),
                ..Query::default()
            },
        )
        .len();
        assert_eq!(before, 75);
        let total = store.info().events;
        assert_eq!(store.forget_player("p3").expect("forget"), 75);
        assert!(all(
            &store,
            Query {
                player: Some("p3".into()),
                ..Query::default()
            }
        )
        .is_empty());
        assert_eq!(store.info().events, total - 75);
        assert_eq!(all(&store, Query::default()).len() as u64, total - 75);
        assert_eq!(store.forget_player("p3").expect("forget again"), 0);
        // appends go on normally afterwards
        let later: Vec<_> = (5000..5010)
            .map(|i| event(i, t0() + chrono::Duration::minutes(2)))
            .collect();
        store
            .append_at(
                AppendBatch {
                    entries: &later,
                    ..Default::default()
                },
                t0() + chrono::Duration::minutes(2),
            )
            .expect("append after forget");
        store.flush().expect("flush");
    }
    let store = Store::open_at(cfg, t0() + chrono::Duration::minutes(3)).expect("reopen");
    assert!(
        all(
            &store,
            Query {
                player: Some("p3".into()),
                ..Query::default()
            }
        )
        .len()
            <= 1,
        "only a later p3 event may exist"
    );
    assert!(store.verify(false).expect("verify").corrupt.is_empty());
}
