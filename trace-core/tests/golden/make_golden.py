"""Regenerates the golden payloads: what a Python game service publishes with `msgpack`.

Run: python3 make_golden.py  (needs `pip install msgpack`); the Rust test
trace-core/tests/golden.rs decodes each file and checks the fields.
"""
import datetime
import msgpack

ts = datetime.datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=datetime.timezone.utc)

# 1. a full envelope: binary data, msgpack timestamp (datetime=True), metrics, meta
full = {
    "id": "01HZY3J6W9Q2V7X8C5B4N3M2K1",
    "ts": ts,
    "type": "agent.decision",
    "category": "agent_decision",
    "source": "npc-7",
    "severity": "warn",
    "session": "s-1",
    "player": 42,
    "parent": "01HZY3J6W9Q2V7X8C5B4N3M2K0",
    "metrics": {"latency_ms": 12.5, "candidates": 3},
    "data": {"action": "flee", "blob": b"\x00\x01\xff", "scores": [0.1, 0.9], "nested": {"k": None}},
    "meta": {"build": "1.2.3", "region": "eu"},
}
open("python_full_envelope.msgpack", "wb").write(msgpack.packb(full, datetime=True))

# 2. the minimal envelope: just a type, ts as an RFC 3339 string
minimal = {"type": "player.move", "ts": "2026-03-01T12:00:00.5Z", "data": {"x": 1, "y": -2}}
open("python_minimal_envelope.msgpack", "wb").write(msgpack.packb(minimal))

# 3. the game's own traffic: a dict without `type` (wrapped, not rejected)
raw = {"hp": 10, "pos": [1.5, 2.5], "name": "goblin"}
open("python_raw_payload.msgpack", "wb").write(msgpack.packb(raw))

# 4. an envelope whose ts is an integer: must be quarantined with a clear reason
bad = {"type": "state.changed", "ts": 1700000000}
open("python_bad_ts.msgpack", "wb").write(msgpack.packb(bad))
