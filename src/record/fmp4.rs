//! Fragmented MP4 as a crash leaves it: `ftyp`, `moov`, then `moof` +
//! `mdat` pairs, the last pair maybe cut short. Every complete pair plays;
//! the cut one is what FFmpeg would hand out as corrupt frames. Sans-IO box
//! walking ([`complete_len`]) and the truncation that repairs such a file.

use std::io::Read;
use std::path::Path;

/// What [`complete_len`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Complete {
    /// Bytes up to the end of the last complete fragment (or of the `moov`
    /// when there is none).
    pub len: u64,
    /// Complete `moof` + `mdat` pairs.
    pub fragments: u64,
}

/// One top-level box header: (type, size in bytes) from `head` (at least
/// 16 bytes where the file has them); `remaining` is the bytes from the
/// box's start to the end of the file (a size of 0 means "to the end").
fn header(head: &[u8], remaining: u64) -> Option<([u8; 4], u64)> {
    let size = u64::from(u32::from_be_bytes(head.get(0..4)?.try_into().ok()?));
    let kind: [u8; 4] = head.get(4..8)?.try_into().ok()?;
    let size = match size {
        0 => remaining,
        1 => u64::from_be_bytes(head.get(8..16)?.try_into().ok()?),
        n => n,
    };
    (size >= 8).then_some((kind, size))
}

/// The length of the playable part of a fragmented MP4 whose top-level box
/// headers are read by `read_at(offset, buf)` (filling as much of `buf` as
/// the file has), `total` bytes long: everything up to the end of the last
/// `mdat` that follows a `moof` and ends within the file.
pub fn complete_len(
    total: u64,
    mut read_at: impl FnMut(u64, &mut [u8]) -> std::io::Result<usize>,
) -> std::io::Result<Complete> {
    let mut at = 0u64;
    let mut done = Complete {
        len: 0,
        fragments: 0,
    };
    let mut after_moof = false;
    let mut head = [0u8; 16];
    while at + 8 <= total {
        let n = read_at(at, &mut head)?;
        let Some((kind, size)) = header(&head[..n], total - at) else {
            break;
        };
        let end = at.saturating_add(size);
        if end > total {
            break; // cut short by the crash
        }
        match &kind {
            b"moov" if done.fragments == 0 => done.len = end,
            b"moof" => after_moof = true,
            b"mdat" if after_moof => {
                after_moof = false;
                done.fragments += 1;
                done.len = end;
            }
            // mfra (a clean end), free, …: part of a complete file.
            _ if !after_moof && done.len == at => done.len = end,
            _ => {}
        }
        at = end;
    }
    Ok(done)
}

/// Cuts the fragmented MP4 at `path` after its last complete fragment.
/// Returns what is kept.
pub fn truncate_to_complete(path: &Path) -> std::io::Result<Complete> {
    use std::io::Seek;
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)?;
    let total = file.metadata()?.len();
    let complete = complete_len(total, |offset, buf| {
        file.seek(std::io::SeekFrom::Start(offset))?;
        let mut filled = 0;
        while filled < buf.len() {
            match file.read(&mut buf[filled..])? {
                0 => break,
                n => filled += n,
            }
        }
        Ok(filled)
    })?;
    if complete.len < total {
        file.set_len(complete.len)?;
    }
    Ok(complete)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boxed(kind: &[u8; 4], body: usize) -> Vec<u8> {
        let mut b = ((body + 8) as u32).to_be_bytes().to_vec();
        b.extend_from_slice(kind);
        b.extend(std::iter::repeat_n(0u8, body));
        b
    }

    fn walk(data: &[u8]) -> Complete {
        complete_len(data.len() as u64, |offset, buf| {
            let from = &data[offset as usize..];
            let n = from.len().min(buf.len());
            buf[..n].copy_from_slice(&from[..n]);
            Ok(n)
        })
        .unwrap()
    }

    #[test]
    fn keeps_whole_fragments_and_drops_a_cut_one() {
        let mut file = boxed(b"ftyp", 16);
        file.extend(boxed(b"moov", 100));
        let head = file.len() as u64;
        for _ in 0..3 {
            file.extend(boxed(b"moof", 40));
            file.extend(boxed(b"mdat", 1000));
        }
        let whole = file.len() as u64;
        assert_eq!(
            walk(&file),
            Complete {
                len: whole,
                fragments: 3
            }
        );
        // A crash in the middle of the fourth mdat, or right after its moof.
        let mut cut = file.clone();
        cut.extend(boxed(b"moof", 40));
        let after_moof = cut.clone();
        cut.extend(boxed(b"mdat", 1000));
        cut.truncate(cut.len() - 300);
        assert_eq!(
            walk(&cut),
            Complete {
                len: whole,
                fragments: 3
            }
        );
        assert_eq!(
            walk(&after_moof),
            Complete {
                len: whole,
                fragments: 3
            }
        );
        // Cut inside a box header, inside the moov, nothing at all.
        let mut header_cut = file.clone();
        header_cut.extend(&boxed(b"moof", 40)[..5]);
        assert_eq!(walk(&header_cut).len, whole);
        assert_eq!(walk(&file[..head as usize - 10]).fragments, 0);
        assert_eq!(
            walk(&[]),
            Complete {
                len: 0,
                fragments: 0
            }
        );
        // A clean end's mfra stays.
        let mut clean = file.clone();
        clean.extend(boxed(b"mfra", 30));
        assert_eq!(walk(&clean).len, clean.len() as u64);
        // A 64-bit size, and a size that claims more than the file holds.
        let mut big = boxed(b"ftyp", 16);
        big.extend(1u32.to_be_bytes());
        big.extend(b"moov");
        big.extend(24u64.to_be_bytes());
        big.extend([0u8; 8]);
        assert_eq!(walk(&big).len, big.len() as u64);
        let mut liar = file.clone();
        liar.extend(u32::MAX.to_be_bytes());
        liar.extend(b"moof");
        assert_eq!(walk(&liar).len, whole);
    }
}
