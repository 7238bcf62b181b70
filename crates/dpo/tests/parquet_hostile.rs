//! Hostile Parquet files: not Parquet at all, cut short at every byte,
//! overwritten at random, or declaring sizes the file does not hold. Each
//! is refused with one error line, quickly, and never with a panic.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dpo::data::{load_preferences, read_parquet_objects, DataError, MAX_PAGE_BYTES};
use transformer::ByteTokenizer;

fn golden(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/golden/parquet")
        .join(path)
}

/// Reads `bytes` as a Parquet file; an error must be one line, naming the file.
fn read(bytes: Vec<u8>) -> Result<usize, DataError> {
    match read_parquet_objects(bytes, "hostile.parquet") {
        Ok(objects) => Ok(objects.len()),
        Err(err) => {
            let shown = err.to_string();
            assert!(!shown.contains('\n'), "{shown}");
            assert!(shown.starts_with("hostile.parquet"), "{shown}");
            Err(err)
        }
    }
}

/// The `Display` of a refusal, which must be a [`DataError::Parquet`].
fn refusal(bytes: Vec<u8>) -> String {
    match read(bytes) {
        Err(err @ DataError::Parquet { .. }) => err.to_string(),
        other => panic!("expected a Parquet error, got {other:?}"),
    }
}

#[test]
fn a_file_that_is_not_parquet_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rows.parquet");
    std::fs::write(
        &path,
        "{\"prompt\": \"a\", \"chosen\": \"b\", \"rejected\": \"c\"}\n",
    )
    .unwrap();
    let err = load_preferences(&path, &ByteTokenizer, 256, true).unwrap_err();
    let shown = err.to_string();
    assert!(matches!(err, DataError::Parquet { .. }), "{shown}");
    assert!(shown.starts_with(&format!("{}: cannot read as Parquet: ", path.display())));
    assert!(!shown.contains('\n'));
}

#[test]
fn parquet_is_told_by_its_content_whatever_the_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rows.jsonl");
    std::fs::copy(golden("text_prefs.zstd.parquet"), &path).unwrap();
    let (rows, _) = load_preferences(&path, &ByteTokenizer, 256, false).unwrap();
    assert_eq!(rows.len(), 7);
}

#[test]
fn every_truncation_is_refused() {
    for name in ["text_prefs.snappy.parquet", "chat_prefs.zstd.parquet"] {
        let bytes = std::fs::read(golden(name)).unwrap();
        assert_eq!(
            read(bytes.clone()).unwrap(),
            if name.starts_with("text") { 7 } else { 3 }
        );
        for len in 0..bytes.len() {
            refusal(bytes[..len].to_vec());
        }
    }
}

#[test]
fn random_overwrites_load_or_are_refused() {
    // xorshift64*: the same overwrites on every run.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    let mut refused = 0;
    for name in [
        "text_prefs.snappy.parquet",
        "ids_prefs.none.parquet",
        "chat_prefs.zstd.parquet",
    ] {
        let original = std::fs::read(golden(name)).unwrap();
        for _ in 0..600 {
            let mut bytes = original.clone();
            for _ in 0..1 + next() % 4 {
                let at = (next() % bytes.len() as u64) as usize;
                bytes[at] = next() as u8;
            }
            refused += usize::from(read(bytes).is_err());
        }
    }
    assert!(refused > 0, "no overwrite was refused");
}

/// `big_page.snappy.parquet` with the first page's declared decompressed
/// size set to `size`: the file's one column chunk starts at byte 4 with a
/// dictionary page header (Thrift compact: field 1 `type`, then field 2
/// `uncompressed_page_size` in a 4-byte zigzag varint).
fn big_page_declaring(size: u32) -> Vec<u8> {
    let mut bytes = std::fs::read(golden("bad/big_page.snappy.parquet")).unwrap();
    assert_eq!(
        bytes[4..6],
        [0x15, 0x04],
        "field 1 (type): a dictionary page"
    );
    assert_eq!(bytes[6], 0x15, "field 2 (uncompressed_page_size)");
    let varint = &mut bytes[7..11];
    assert!(varint[..3].iter().all(|b| b & 0x80 != 0) && varint[3] & 0x80 == 0);
    let zigzag = size << 1;
    assert!(zigzag < 1 << 28, "the size must fit the varint's 4 bytes");
    for (i, byte) in varint.iter_mut().enumerate() {
        *byte = (zigzag >> (7 * i)) as u8 & 0x7f | if i < 3 { 0x80 } else { 0 };
    }
    bytes
}

/// The peak resident memory of this process so far (Linux), in bytes.
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib << 10)
}

#[test]
fn a_page_declaring_a_huge_size_is_refused_before_it_is_allocated() {
    let before = peak_rss();
    let start = Instant::now();
    let shown = refusal(big_page_declaring((1 << 27) - 1));
    assert!(
        shown.contains("more than the 64 MiB a page may hold"),
        "{shown}"
    );
    assert!(start.elapsed() < Duration::from_secs(2));
    // A size under the cap but not the page's: the crate decompresses into
    // a buffer of the declared size (zero-filled past the page's own bytes),
    // so it may read or refuse the file; either way it took at most the cap.
    let _ = read(big_page_declaring(MAX_PAGE_BYTES as u32 - 1));
    if let (Some(before), Some(after)) = (before, peak_rss()) {
        let grown = after.saturating_sub(before);
        assert!(
            grown <= MAX_PAGE_BYTES as u64 + (16 << 20),
            "grew {grown} bytes"
        );
    }
    // The file as written reads.
    let bytes = std::fs::read(golden("bad/big_page.snappy.parquet")).unwrap();
    assert_eq!(read(bytes).unwrap(), 1);
}

#[test]
fn a_footer_declaring_a_huge_size_is_refused() {
    let mut bytes = std::fs::read(golden("text_prefs.snappy.parquet")).unwrap();
    let len = bytes.len();
    assert_eq!(&bytes[len - 4..], b"PAR1");
    bytes[len - 8..len - 4].copy_from_slice(&u32::MAX.to_le_bytes());
    let start = Instant::now();
    refusal(bytes);
    assert!(start.elapsed() < Duration::from_secs(2));
}
