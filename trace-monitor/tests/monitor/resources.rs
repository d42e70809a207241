//! Resource usage on this machine: plausible values where the OS exposes them.

use std::io::Write;

use trace_monitor::{dir_bytes, ResourceSampler};

use crate::util::t;

#[test]
fn resource_usage_is_plausible() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut f = std::fs::File::create(dir.path().join("seg")).expect("file");
    f.write_all(&vec![7u8; 256 * 1024]).expect("write");
    f.sync_all().expect("sync");
    std::fs::create_dir(dir.path().join("sub")).expect("sub dir");
    std::fs::write(dir.path().join("sub").join("more"), vec![1u8; 64 * 1024]).expect("write");

    let mut sampler = ResourceSampler::new(Some(dir.path().to_path_buf()));
    let first = sampler.sample(t(0));
    // Burn some CPU between samples.
    let mut x = 0u64;
    let start = std::time::Instant::now();
    while start.elapsed() < std::time::Duration::from_millis(200) {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
    }
    std::hint::black_box(x);
    let second = sampler.sample(t(1));

    let data = second.data_dir_bytes.expect("data dir measured");
    assert!(data >= 320 * 1024, "at least the bytes written: {data}");
    assert_eq!(dir_bytes(&dir.path().join("missing")), None);
    let free = second.disk_free_bytes.expect("free disk on unix");
    let total = second.disk_total_bytes.expect("total on unix");
    assert!(free > 0 && free <= total);

    if cfg!(target_os = "linux") {
        let cpu = second.cpu_percent.expect("cpu on linux");
        assert!(cpu > 10.0, "a busy loop shows: {cpu}");
        assert!(cpu < 100.0 * 64.0, "{cpu}");
        assert!(
            first.cpu_percent.is_some(),
            "first sample: average since start"
        );
        let rss = second.rss_bytes.expect("rss on linux");
        assert!(rss > 1 << 20 && rss < 64 << 30, "{rss}");
        let files = second.open_files.expect("fds on linux");
        assert!(files >= 3, "{files}");
        let f2 = std::fs::File::open(dir.path().join("seg")).expect("open");
        let more = sampler.sample(t(2)).open_files.expect("fds");
        assert!(more > files || more >= 3, "{more} vs {files}");
        drop(f2);
    }
}
