//! The last lines of a log file, read backwards, as the file was at a mark (its inode and size
//! when the daemon began a stream), reaching back into its rotated and gzipped files when it
//! holds fewer: what `herder logs` and `monit` show before the lines the daemon streams.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::logs::file::rotated_files;
use crate::protocol::FileMark;

/// Rotated files of `path`, oldest first, without half-written compressions and without the
/// `.gz` of a file whose compression has not finished (the plain one is still whole).
fn rotated(path: &Path) -> Vec<PathBuf> {
    let all = rotated_files(path);
    let mut files: Vec<PathBuf> = all
        .iter()
        .filter(|p| {
            let name = p.to_string_lossy();
            if name.ends_with(".tmp") {
                return false;
            }
            match name.strip_suffix(".gz") {
                Some(plain) => !all.iter().any(|q| q.as_os_str() == plain),
                None => true,
            }
        })
        .cloned()
        .collect();
    // By age, which the name without `.gz` gives: `x.<t>.gz` is older than `x.<t>-0001`.
    files.sort_by_cached_key(|p| {
        let name = p.to_string_lossy();
        name.strip_suffix(".gz").unwrap_or(&name).to_string()
    });
    files
}

/// The last `n` lines (without their newlines) of `path` as it was at `mark`, continuing
/// back into the rotated files when it holds fewer. Without a mark the file did not exist
/// when the daemon answered: only its rotated files count.
pub fn tail_lines(path: &Path, mark: Option<&FileMark>, n: usize) -> io::Result<Vec<Vec<u8>>> {
    let rotated = rotated(path);
    let is_marked = |f: &File| mark.is_some_and(|m| f.metadata().is_ok_and(|md| md.ino() == m.inode));
    // The marked file, and the rotated files older than it.
    let mut current: Option<(File, u64)> = None;
    let mut older: &[PathBuf] = &rotated;
    if let Some(m) = mark {
        if let Some(f) = File::open(path).ok().filter(is_marked) {
            current = Some((f, m.size));
        } else {
            // Rotated since the daemon answered: renamed aside, same inode.
            for (i, r) in rotated.iter().enumerate() {
                if let Some(f) = File::open(r).ok().filter(is_marked) {
                    current = Some((f, m.size));
                    older = &rotated[..i];
                    break;
                }
            }
        }
    }
    // Newest file first.
    let mut found: Vec<Vec<Vec<u8>>> = Vec::new();
    let mut count = 0;
    if let Some((f, end)) = current {
        let end = end.min(f.metadata()?.len());
        let lines = last_lines(&f, end, n)?;
        count += lines.len();
        found.push(lines);
    }
    for r in older.iter().rev() {
        if count >= n {
            break;
        }
        let lines = match File::open(r) {
            Ok(f) if r.extension().is_some_and(|e| e == "gz") => last_lines_gz(f, n - count)?,
            Ok(f) => {
                let end = f.metadata()?.len();
                last_lines(&f, end, n - count)?
            }
            // Pruned or compressed meanwhile.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        count += lines.len();
        found.push(lines);
    }
    let mut all: Vec<Vec<u8>> = found.into_iter().rev().flatten().collect();
    let extra = all.len().saturating_sub(n);
    all.drain(..extra);
    Ok(all)
}

/// The last `want` lines of the first `end` bytes of `f`, read backwards in blocks.
fn last_lines(f: &File, end: u64, want: usize) -> io::Result<Vec<Vec<u8>>> {
    const BLOCK: u64 = 64 * 1024;
    if want == 0 || end == 0 {
        return Ok(Vec::new());
    }
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    let mut pos = end;
    let mut newlines = 0;
    // `want` whole lines need `want` newlines after the one that ends the line before them
    // (the file's last newline ends its last line).
    while pos > 0 && newlines <= want {
        let start = pos.saturating_sub(BLOCK);
        let mut buf = vec![0u8; (pos - start) as usize];
        let mut got = 0;
        while got < buf.len() {
            match f.read_at(&mut buf[got..], start + got as u64) {
                Ok(0) => break,
                Ok(k) => got += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        // A file emptied meanwhile (`flush`) leaves zeros here; keep what was read.
        buf.truncate(got);
        newlines += memchr::memchr_iter(b'\n', &buf).count();
        blocks.push(buf);
        pos = start;
    }
    let data: Vec<u8> = blocks.into_iter().rev().flatten().collect();
    let body = data.strip_suffix(b"\n").unwrap_or(&data);
    let mut lines: Vec<&[u8]> = body.split(|b| *b == b'\n').collect();
    if pos > 0 {
        // The first piece is the end of a line that started before what was read.
        lines.remove(0);
    }
    let skip = lines.len().saturating_sub(want);
    Ok(lines[skip..].iter().map(|l| l.to_vec()).collect())
}

/// The last `want` lines of a gzipped rotated file (read from its start: gzip cannot seek).
fn last_lines_gz(f: File, want: usize) -> io::Result<Vec<Vec<u8>>> {
    let mut keep: VecDeque<Vec<u8>> = VecDeque::with_capacity(want.min(4096) + 1);
    let mut r = BufReader::new(flate2::read::MultiGzDecoder::new(f));
    loop {
        let mut line = Vec::new();
        if r.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        if keep.len() == want {
            keep.pop_front();
        }
        if want > 0 {
            keep.push_back(line);
        }
    }
    Ok(keep.into())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn lines(range: std::ops::Range<u32>) -> String {
        range.map(|i| format!("line {i}\n")).collect()
    }

    fn text(v: Vec<Vec<u8>>) -> Vec<String> {
        v.into_iter().map(|l| String::from_utf8(l).unwrap()).collect()
    }

    fn want(range: std::ops::Range<u32>) -> Vec<String> {
        range.map(|i| format!("line {i}")).collect()
    }

    fn gz(path: &Path, content: &str) {
        let f = File::create(path).unwrap();
        let mut enc = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
        enc.write_all(content.as_bytes()).unwrap();
        enc.finish().unwrap();
    }

    fn mark_of(path: &Path) -> FileMark {
        let md = std::fs::metadata(path).unwrap();
        FileMark { path: path.to_path_buf(), inode: md.ino(), size: md.len() }
    }

    #[test]
    fn backwards_in_small_and_large_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.log");
        std::fs::write(&p, lines(0..100_000)).unwrap();
        let f = File::open(&p).unwrap();
        let len = f.metadata().unwrap().len();
        assert_eq!(text(last_lines(&f, len, 3).unwrap()), want(99_997..100_000));
        assert_eq!(text(last_lines(&f, len, 20_000).unwrap()), want(80_000..100_000));
        assert_eq!(text(last_lines(&f, len, 200_000).unwrap()).len(), 100_000);
        std::fs::write(&p, "no newline at the end").unwrap();
        let f = File::open(&p).unwrap();
        assert_eq!(text(last_lines(&f, 21, 5).unwrap()), ["no newline at the end"]);
        assert!(last_lines(&f, 0, 5).unwrap().is_empty());
    }

    #[test]
    fn the_tail_reaches_back_through_rotated_and_gzipped_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("web-0.out.log");
        gz(&dir.path().join("web-0.out.log.20260101-000000.000.gz"), &lines(0..20));
        std::fs::write(dir.path().join("web-0.out.log.20260102-000000.000"), lines(20..40)).unwrap();
        std::fs::write(&p, lines(40..70)).unwrap();
        // A compression in progress is not a file to read.
        std::fs::write(dir.path().join("web-0.out.log.20260102-000000.000.gz.tmp"), "junk").unwrap();
        let m = mark_of(&p);
        assert_eq!(text(tail_lines(&p, Some(&m), 10).unwrap()), want(60..70));
        assert_eq!(text(tail_lines(&p, Some(&m), 50).unwrap()), want(20..70));
        assert_eq!(text(tail_lines(&p, Some(&m), 60).unwrap()), want(10..70));
        assert_eq!(text(tail_lines(&p, Some(&m), 1000).unwrap()), want(0..70));
    }

    #[test]
    fn the_tail_stops_at_the_mark_even_after_a_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.log");
        std::fs::write(dir.path().join("w.log.20260101-000000.000"), lines(0..10)).unwrap();
        std::fs::write(&p, lines(10..20)).unwrap();
        let m = mark_of(&p);
        // Written after the mark: the stream shows these.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&p)
            .unwrap()
            .write_all(lines(20..25).as_bytes())
            .unwrap();
        assert_eq!(text(tail_lines(&p, Some(&m), 5).unwrap()), want(15..20));
        // Then rotated: the marked file is now the newest rotated one.
        std::fs::rename(&p, dir.path().join("w.log.20260102-000000.000")).unwrap();
        std::fs::write(&p, lines(25..30)).unwrap();
        assert_eq!(text(tail_lines(&p, Some(&m), 15).unwrap()), want(5..20));
        // No mark: the file began after the daemon answered.
        assert_eq!(text(tail_lines(&p, None, 3).unwrap()), want(22..25));
    }

    #[test]
    fn gzipped_files_keep_their_place_among_rotations_of_the_same_tick() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.log");
        gz(&dir.path().join("w.log.20260101-000000.000000.gz"), &lines(0..10));
        std::fs::write(dir.path().join("w.log.20260101-000000.000000-0001"), lines(10..20)).unwrap();
        std::fs::write(&p, lines(20..25)).unwrap();
        let m = mark_of(&p);
        assert_eq!(text(tail_lines(&p, Some(&m), 100).unwrap()), want(0..25));
    }

    #[test]
    fn the_plain_file_wins_over_its_unfinished_gzip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.log");
        let r = dir.path().join("w.log.20260101-000000.000");
        std::fs::write(&r, lines(0..10)).unwrap();
        gz(&dir.path().join("w.log.20260101-000000.000.gz"), &lines(0..10));
        std::fs::write(&p, "").unwrap();
        let m = mark_of(&p);
        assert_eq!(text(tail_lines(&p, Some(&m), 100).unwrap()), want(0..10));
    }
}
