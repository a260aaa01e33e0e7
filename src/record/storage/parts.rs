//! How a file is cut into upload parts, and the journal that lets an upload
//! resume where it stopped (after a failure, or a crash of the process).
//!
//! S3's rules, held for every server even where it does not enforce them:
//! every part but the last at least 5 MiB, at most 10,000 parts, all parts
//! but the last the same size (R2 requires that).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// S3's smallest part (but the last).
pub const MIN_PART: u64 = 5 * 1024 * 1024;
/// S3's largest part.
pub const MAX_PART: u64 = 5 * 1024 * 1024 * 1024;
/// S3's most parts per upload.
pub const MAX_PARTS: u64 = 10_000;

/// The parts of one file: equal `part_size` pieces, the last shorter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The file's size.
    pub size: u64,
    /// Every part's size but the last's.
    pub part_size: u64,
}

impl Plan {
    /// The plan for a file of `size` bytes with parts of `preferred` bytes
    /// (raised to S3's smallest, and to whole MiB large enough to stay within
    /// 10,000 parts). `None` when no plan fits (over 48.8 TiB).
    pub fn new(size: u64, preferred: u64) -> Option<Plan> {
        const MIB: u64 = 1024 * 1024;
        let needed = size.div_ceil(MAX_PARTS).div_ceil(MIB) * MIB;
        let part_size = preferred.max(MIN_PART).max(needed);
        (part_size <= MAX_PART).then_some(Plan { size, part_size })
    }

    /// Whether the file goes up in one request (it fits in one part).
    pub fn single(&self) -> bool {
        self.size <= self.part_size
    }

    /// How many parts.
    pub fn count(&self) -> u64 {
        self.size.div_ceil(self.part_size).max(1)
    }

    /// Where part `index` (from 0) starts and how long it is.
    pub fn part(&self, index: u64) -> (u64, u64) {
        let start = index * self.part_size;
        (start, self.part_size.min(self.size.saturating_sub(start)))
    }
}

/// What an unfinished multipart upload has done, kept beside the file
/// (`FILE.upload`) and rewritten after each part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    /// The object being written.
    pub key: String,
    /// The storage server's id of the upload.
    pub upload_id: String,
    /// The file's SHA-256 (hex) when the upload began.
    pub sha256: String,
    /// How it is cut.
    pub plan: Plan,
    /// What the server returned for each part uploaded so far, in order.
    pub parts: Vec<String>,
}

impl Journal {
    /// Where the journal of `file` is.
    pub fn path_of(file: &Path) -> PathBuf {
        let mut name = file.as_os_str().to_owned();
        name.push(".upload");
        PathBuf::from(name)
    }

    /// The journal of `file`, if one is there and readable.
    pub fn read(file: &Path) -> Option<Journal> {
        let text = std::fs::read(Self::path_of(file)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Writes it beside `file` (a temporary file renamed over the old one,
    /// so a crash leaves the old or the new journal, never half of one).
    pub fn write(&self, file: &Path) -> std::io::Result<()> {
        let path = Self::path_of(file);
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        std::fs::write(
            &tmp,
            serde_json::to_vec(self).map_err(std::io::Error::other)?,
        )?;
        std::fs::rename(&tmp, &path)
    }

    /// Removes the journal of `file` (nothing there is fine).
    pub fn remove(file: &Path) {
        let _ = std::fs::remove_file(Self::path_of(file));
    }

    /// Whether it continues an upload of this very content.
    pub fn continues(&self, key: &str, sha256: &str, plan: &Plan) -> bool {
        self.key == key
            && self.sha256 == sha256
            && &self.plan == plan
            && (self.parts.len() as u64) < plan.count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn parts_are_equal_but_the_last() {
        let plan = Plan::new(12 * MIB + 5, 5 * MIB).unwrap();
        assert_eq!(plan.count(), 3);
        assert_eq!(plan.part(0), (0, 5 * MIB));
        assert_eq!(plan.part(1), (5 * MIB, 5 * MIB));
        assert_eq!(plan.part(2), (10 * MIB, 2 * MIB + 5));
        assert!(!plan.single());
    }

    #[test]
    fn small_parts_are_raised_to_s3s_minimum() {
        assert_eq!(Plan::new(100 * MIB, MIB).unwrap().part_size, MIN_PART);
    }

    #[test]
    fn a_huge_file_gets_parts_large_enough_for_10000() {
        let size = 200 * 1024 * MIB; // 200 GiB
        let plan = Plan::new(size, 8 * MIB).unwrap();
        assert!(plan.count() <= MAX_PARTS);
        assert_eq!(plan.part_size % MIB, 0);
        let (start, len) = plan.part(plan.count() - 1);
        assert_eq!(start + len, size);
        assert!(Plan::new(MAX_PART * MAX_PARTS + 1, 8 * MIB).is_none());
    }

    #[test]
    fn a_small_file_is_one_request() {
        let plan = Plan::new(3 * MIB, 8 * MIB).unwrap();
        assert!(plan.single());
        assert_eq!(plan.count(), 1);
        assert!(Plan::new(0, 8 * MIB).unwrap().single());
    }

    #[test]
    fn a_journal_survives_a_round_trip_and_knows_its_upload() {
        let dir = std::env::temp_dir().join(format!("castgate-journal-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("2026-12-06T10-00-00Z.webm");
        let plan = Plan::new(12 * MIB, 5 * MIB).unwrap();
        let j = Journal {
            key: "cam/2026-12-06T10-00-00Z.webm".into(),
            upload_id: "u1".into(),
            sha256: "ab".into(),
            plan,
            parts: vec!["e1".into()],
        };
        j.write(&file).unwrap();
        let back = Journal::read(&file).unwrap();
        assert_eq!(back, j);
        assert!(back.continues(&j.key, "ab", &plan));
        assert!(!back.continues(&j.key, "cd", &plan), "other content");
        Journal::remove(&file);
        assert!(Journal::read(&file).is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
