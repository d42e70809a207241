//! The client's spill files: where entries wait, on local disk and in order, while NATS is
//! unreachable (or the in-memory buffer overflows), until they are replayed.
//!
//! Format: append-only records, each `[u32 LE body length][u32 LE crc32 of body][body]`, the
//! body being `[u64 LE sequence][16 bytes ULID id][u16 LE subject length][subject][msgpack
//! entry]` where the
//! entry is what [`encode_entry`](crate::encode_entry) writes (the exact bytes published). A
//! torn or corrupt tail (a crash mid-write) ends the file: the reader stops there and says so.
//! Files are named `<process start, unix ms>-<first sequence>-<counter>.spill` (fixed widths),
//! so sorting names sorts them in the order their entries were logged: earlier processes
//! first, then by the sequence of the first entry (an overflow file can be created before the
//! spill file that receives entries logged ahead of it).

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use crate::client::ClientError;
use crate::entry::{EventId, TraceEntry};

/// The file name extension of spill files.
const EXTENSION: &str = "spill";
/// Sequence, id and subject length: the fixed part of a record body.
const HEADER_BYTES: usize = 8 + 16 + 2;
/// Records larger than this are corrupt (NATS payloads are far smaller).
const MAX_RECORD_BYTES: usize = 64 * 1024 * 1024;

/// One entry as it is published and spilled: its sequence in the client, subject and bytes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SpillRecord {
    /// The client's sequence number (0 for records adopted from an earlier process).
    pub(crate) seq: u64,
    /// The entry's id (its `Nats-Msg-Id`).
    pub(crate) id: EventId,
    /// `game.<kind>.<source>.<type>`.
    pub(crate) subject: String,
    /// The encoded envelope.
    pub(crate) payload: Bytes,
}

/// Appends records to one spill file.
#[derive(Debug)]
pub(crate) struct SpillWriter {
    path: PathBuf,
    out: BufWriter<File>,
    last_seq: u64,
}

static FILE_COUNTER: AtomicU64 = AtomicU64::new(0);
static PROCESS_START_MS: std::sync::OnceLock<i64> = std::sync::OnceLock::new();

impl SpillWriter {
    /// Creates a new spill file in `dir` whose first record will have sequence `first_seq`.
    pub(crate) fn create(dir: &Path, first_seq: u64) -> Result<SpillWriter, ClientError> {
        let started =
            *PROCESS_START_MS.get_or_init(|| chrono::Utc::now().timestamp_millis().max(0));
        let n = FILE_COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!("{started:013}-{first_seq:020}-{n:08}.{EXTENSION}"));
        let file = File::options()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(|e| ClientError::spill(&path, "creating", e))?;
        Ok(SpillWriter {
            path,
            out: BufWriter::with_capacity(64 * 1024, file),
            last_seq: 0,
        })
    }

    /// Appends one record (buffered; [`SpillWriter::sync`] makes it durable).
    pub(crate) fn append(&mut self, record: &SpillRecord) -> Result<(), ClientError> {
        let subject = record.subject.as_bytes();
        let subject_len = u16::try_from(subject.len()).unwrap_or(u16::MAX);
        let subject = &subject[..usize::from(subject_len)];
        let mut body = Vec::with_capacity(HEADER_BYTES + subject.len() + record.payload.len());
        body.extend_from_slice(&record.seq.to_le_bytes());
        body.extend_from_slice(&record.id.0.to_bytes());
        body.extend_from_slice(&subject_len.to_le_bytes());
        body.extend_from_slice(subject);
        body.extend_from_slice(&record.payload);
        let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
        let crc = crc32fast::hash(&body);
        let write = |out: &mut BufWriter<File>| -> io::Result<()> {
            out.write_all(&len.to_le_bytes())?;
            out.write_all(&crc.to_le_bytes())?;
            out.write_all(&body)
        };
        write(&mut self.out).map_err(|e| ClientError::spill(&self.path, "appending to", e))?;
        self.last_seq = self.last_seq.max(record.seq);
        Ok(())
    }

    /// Writes the buffer out and fsyncs the file.
    pub(crate) fn sync(&mut self) -> Result<(), ClientError> {
        self.out
            .flush()
            .and_then(|()| self.out.get_ref().sync_data())
            .map_err(|e| ClientError::spill(&self.path, "syncing", e))
    }

    /// The highest sequence appended.
    pub(crate) fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Syncs and closes the file, returning its path.
    pub(crate) fn finish(mut self) -> Result<PathBuf, ClientError> {
        self.sync()?;
        Ok(self.path)
    }
}

/// Reads the records of one spill file in order.
#[derive(Debug)]
pub(crate) struct SpillReader {
    path: PathBuf,
    input: BufReader<File>,
}

impl SpillReader {
    /// Opens a spill file.
    pub(crate) fn open(path: &Path) -> Result<SpillReader, ClientError> {
        let file = File::open(path).map_err(|e| ClientError::spill(path, "opening", e))?;
        Ok(SpillReader {
            path: path.to_path_buf(),
            input: BufReader::with_capacity(64 * 1024, file),
        })
    }

    /// The next record; `Ok(None)` at the end. A torn or corrupt record is an error naming the
    /// file: nothing after it can be trusted.
    pub(crate) fn next_record(&mut self) -> Result<Option<SpillRecord>, ClientError> {
        let mut header = [0u8; 8];
        match read_full(&mut self.input, &mut header) {
            Ok(0) => return Ok(None),
            Ok(8) => {}
            Ok(_) => return Err(self.corrupt("a torn record header at the end")),
            Err(e) => return Err(ClientError::spill(&self.path, "reading", e)),
        }
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if !(HEADER_BYTES..=MAX_RECORD_BYTES).contains(&len) {
            return Err(self.corrupt(&format!("a record length of {len} bytes")));
        }
        let mut body = vec![0u8; len];
        match read_full(&mut self.input, &mut body) {
            Ok(n) if n == len => {}
            Ok(_) => return Err(self.corrupt("a torn record at the end")),
            Err(e) => return Err(ClientError::spill(&self.path, "reading", e)),
        }
        if crc32fast::hash(&body) != crc {
            return Err(self.corrupt("a record whose checksum does not match"));
        }
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&body[..8]);
        let mut id = [0u8; 16];
        id.copy_from_slice(&body[8..24]);
        let subject_len = usize::from(u16::from_le_bytes([body[24], body[25]]));
        let Some(subject) = body.get(HEADER_BYTES..HEADER_BYTES + subject_len) else {
            return Err(self.corrupt("a subject longer than its record"));
        };
        let subject = String::from_utf8_lossy(subject).into_owned();
        let payload = Bytes::from(body).slice(HEADER_BYTES + subject_len..);
        Ok(Some(SpillRecord {
            seq: u64::from_le_bytes(seq),
            id: EventId(ulid::Ulid::from_bytes(id)),
            subject,
            payload,
        }))
    }

    fn corrupt(&self, what: &str) -> ClientError {
        ClientError::SpillCorrupt {
            path: self.path.clone(),
            reason: what.to_owned(),
        }
    }
}

/// Reads as many bytes as fit in `buf`, stopping early only at the end of the input.
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// The spill files in `dir`, oldest first.
pub(crate) fn spill_files(dir: &Path) -> Result<Vec<PathBuf>, ClientError> {
    let listing = match fs::read_dir(dir) {
        Ok(listing) => listing,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(ClientError::spill(dir, "listing", e)),
    };
    let mut files: Vec<PathBuf> = listing
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|ext| ext == EXTENSION))
        .collect();
    files.sort();
    Ok(files)
}

/// Every entry waiting in the spill files of `dir`, in the order they were logged: what a
/// client with [`spill_only`](crate::client::TraceClientBuilder::spill_only) recorded, or what
/// a client left behind when it was closed while NATS was unreachable.
pub fn read_spill_dir(dir: &Path) -> Result<Vec<TraceEntry>, ClientError> {
    let mut entries = Vec::new();
    for path in spill_files(dir)? {
        let mut reader = SpillReader::open(&path)?;
        while let Some(record) = reader.next_record()? {
            let mut bytes: &[u8] = &record.payload;
            let entry = crate::codec::decode_stored_entry(&mut bytes).map_err(|e| {
                ClientError::SpillCorrupt {
                    path: path.clone(),
                    reason: format!("an entry that does not decode: {e}"),
                }
            })?;
            entries.push(entry);
        }
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn record(seq: u64) -> SpillRecord {
        let entry = TraceEntry::new(format!("test.n{seq}"), "src");
        SpillRecord {
            seq,
            id: entry.id,
            subject: format!("game.agent.src.test.n{seq}"),
            payload: Bytes::from(crate::encode_entry_vec(&entry)),
        }
    }

    #[test]
    fn records_come_back_in_order_across_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut written = Vec::new();
        for file in 0..3u64 {
            let mut w = SpillWriter::create(dir.path(), file * 100 + 1).unwrap();
            for i in 0..100 {
                let r = record(file * 100 + i + 1);
                w.append(&r).unwrap();
                written.push(r);
            }
            w.finish().unwrap();
        }
        let mut read = Vec::new();
        for path in spill_files(dir.path()).unwrap() {
            let mut r = SpillReader::open(&path).unwrap();
            while let Some(rec) = r.next_record().unwrap() {
                read.push(rec);
            }
        }
        assert_eq!(read, written);
        let entries = read_spill_dir(dir.path()).unwrap();
        let types: Vec<String> = entries.iter().map(|e| e.event_type.clone()).collect();
        let expected: Vec<String> = (1..=300).map(|i| format!("test.n{i}")).collect();
        assert_eq!(types, expected);
    }

    #[test]
    fn a_torn_tail_is_reported_not_misread() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = SpillWriter::create(dir.path(), 1).unwrap();
        w.append(&record(1)).unwrap();
        w.append(&record(2)).unwrap();
        let path = w.finish().unwrap();
        let len = fs::metadata(&path).unwrap().len();
        let file = File::options().write(true).open(&path).unwrap();
        file.set_len(len - 5).unwrap();
        let mut r = SpillReader::open(&path).unwrap();
        assert_eq!(r.next_record().unwrap().unwrap().seq, 1);
        let err = r.next_record().unwrap_err();
        assert!(err.to_string().contains("torn"), "{err}");
    }
}
