//! Which program image the daemon runs: its version, the binary's build id, the binary's path
//! (which `herder update` executes again) and how many images this pid ran before.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::handover::{HANDOVER_MAX, HANDOVER_MIN};
use crate::protocol::{ImageInfo, PROGRAM_VERSION};

/// The GNU build id of the running binary (from its `PT_NOTE` segment), in hex.
pub fn build_id() -> Option<String> {
    struct Found(Option<String>);
    unsafe extern "C" fn each(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut libc::c_void,
    ) -> i32 {
        // SAFETY: the loader passes a valid `dl_phdr_info` whose headers and segments are
        // mapped; `data` is the `Found` below. The first object is the executable itself.
        unsafe {
            let found = &mut *(data as *mut Found);
            let info = &*info;
            for i in 0..info.dlpi_phnum as usize {
                let ph = &*info.dlpi_phdr.add(i);
                if ph.p_type != libc::PT_NOTE {
                    continue;
                }
                let start = (info.dlpi_addr as usize + ph.p_vaddr as usize) as *const u8;
                let notes = std::slice::from_raw_parts(start, ph.p_memsz as usize);
                if let Some(id) = gnu_build_id(notes) {
                    found.0 = Some(id.iter().map(|b| format!("{b:02x}")).collect());
                    break;
                }
            }
            1
        }
    }
    let mut found = Found(None);
    // SAFETY: the callback only reads what the loader hands it and stops after the first
    // object.
    unsafe { libc::dl_iterate_phdr(Some(each), (&mut found as *mut Found).cast()) };
    found.0
}

/// The `NT_GNU_BUILD_ID` note in a `PT_NOTE` segment.
fn gnu_build_id(mut notes: &[u8]) -> Option<&[u8]> {
    const NT_GNU_BUILD_ID: u32 = 3;
    let align4 = |n: usize| (n + 3) & !3;
    while notes.len() >= 12 {
        let word = |i: usize| u32::from_ne_bytes(notes[i..i + 4].try_into().unwrap_or_default());
        let (namesz, descsz, kind) = (word(0) as usize, word(4) as usize, word(8));
        let desc_at = 12 + align4(namesz);
        let end = desc_at + align4(descsz);
        if notes.len() < desc_at + descsz {
            return None;
        }
        if kind == NT_GNU_BUILD_ID && &notes[12..12 + namesz.min(4)] == b"GNU\0" {
            return Some(&notes[desc_at..desc_at + descsz]);
        }
        notes = notes.get(end..)?;
    }
    None
}

/// The binary this process runs, as its path was when it started: once the file is replaced,
/// `/proc/self/exe` reads `<path> (deleted)`, and the new file at `<path>` is the one to run.
pub fn current_exe() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
    strip_deleted(&exe)
}

fn strip_deleted(exe: &Path) -> PathBuf {
    let s = exe.as_os_str().to_string_lossy();
    match s.strip_suffix(" (deleted)") {
        Some(p) if !exe.exists() => PathBuf::from(p),
        _ => exe.to_path_buf(),
    }
}

/// This image, the `generation`-th of its process, started from `exe`.
pub fn this_image(exe: PathBuf, generation: u32) -> ImageInfo {
    ImageInfo { version: PROGRAM_VERSION.to_string(), build_id: build_id(), generation, exe }
}

/// What `herder handover-check` prints: a daemon checks the binary it is about to execute
/// with it, so that a file that is not a herder able to take over never replaces the daemon.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckReport {
    pub program: String,
    pub version: String,
    #[serde(default)]
    pub build_id: Option<String>,
    /// Handover documents this binary reads, oldest and newest.
    pub handover_min: u32,
    pub handover_max: u32,
}

pub fn check_report() -> CheckReport {
    CheckReport {
        program: "herder".into(),
        version: PROGRAM_VERSION.to_string(),
        build_id: build_id(),
        handover_min: HANDOVER_MIN,
        handover_max: HANDOVER_MAX,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_build_id_is_found_and_stable() {
        // Test binaries are linked like the daemon, with a build id.
        let id = build_id().expect("a build id");
        assert!(id.len() >= 16 && id.chars().all(|c| c.is_ascii_hexdigit()), "{id}");
        assert_eq!(build_id(), Some(id));
    }

    #[test]
    fn a_replaced_binary_is_found_at_its_path() {
        assert_eq!(
            strip_deleted(Path::new("/nonexistent/herder (deleted)")),
            PathBuf::from("/nonexistent/herder")
        );
        assert_eq!(strip_deleted(Path::new("/bin/sh")), PathBuf::from("/bin/sh"));
    }

    #[test]
    fn notes_are_parsed() {
        let mut note = Vec::new();
        for w in [4u32, 3, 1] {
            note.extend_from_slice(&w.to_ne_bytes());
        }
        note.extend_from_slice(b"XYZ\0\x01\x02\x03\0");
        for w in [4u32, 2, 3] {
            note.extend_from_slice(&w.to_ne_bytes());
        }
        note.extend_from_slice(b"GNU\0\xab\xcd\0\0");
        assert_eq!(gnu_build_id(&note), Some(&[0xab, 0xcd][..]));
        assert_eq!(gnu_build_id(&note[..20]), None);
    }
}
