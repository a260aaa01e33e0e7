//! H.264 in Annex-B form (what str0m's depacketizer hands over and what the
//! recorder and the restreamer read): NAL units split at their start codes,
//! emulation prevention removed, and the parameter sets an access unit
//! carries.
//!
//! The input is untrusted network data: nothing here panics on any bytes.

/// Iterator over the NAL units of an Annex-B byte stream, without their
/// start codes (`00 00 01` or `00 00 00 01`); bytes before the first start
/// code are ignored, trailing zero bytes of a unit are dropped.
pub struct NalUnits<'a> {
    data: &'a [u8],
    /// Start of the next NAL unit, `None` when exhausted.
    next: Option<usize>,
}

/// The NAL units of `data`, an Annex-B access unit.
pub fn nal_units(data: &[u8]) -> NalUnits<'_> {
    NalUnits {
        data,
        next: find_after_start_code(data, 0),
    }
}

impl<'a> Iterator for NalUnits<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let start = self.next?;
        let following = find_after_start_code(self.data, start);
        self.next = following;
        // The next NAL's start code is 3 bytes before its payload.
        let end = following.map_or(self.data.len(), |f| f.saturating_sub(3));
        let nal = self.data.get(start..end.max(start))?;
        // Drop trailing zero bytes (the leading zero of a 4-byte start code,
        // or trailing_zero_8bits).
        let trimmed = nal.len() - nal.iter().rev().take_while(|&&b| b == 0).count();
        nal.get(..trimmed)
    }
}

/// Index of the first byte after the next `00 00 01` at or after `from`.
fn find_after_start_code(data: &[u8], from: usize) -> Option<usize> {
    data.get(from..)?
        .windows(3)
        .position(|w| w == [0, 0, 1])
        .map(|p| from + p + 3)
}

/// The type of a NAL unit (5 = IDR slice, 7 = SPS, 8 = PPS), from its header byte.
pub fn nal_type(nal: &[u8]) -> Option<u8> {
    nal.first().map(|h| h & 0x1f)
}

/// Removes H.264 emulation prevention bytes (`00 00 03` becomes `00 00`).
pub fn unescape_rbsp(nal: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(nal.len());
    let mut zeros = 0;
    for &byte in nal {
        if zeros >= 2 && byte == 3 {
            zeros = 0;
            continue;
        }
        zeros = if byte == 0 { zeros + 1 } else { 0 };
        out.push(byte);
    }
    out
}

/// The SPS and PPS NAL units of an Annex-B access unit, each with a 4-byte
/// start code: what a container's codec data (avcC) or an FLV sequence
/// header is made from. Empty when the unit carries none.
pub fn parameter_sets(access_unit: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for nal in nal_units(access_unit) {
        if matches!(nal_type(nal), Some(7 | 8)) {
            out.extend_from_slice(&[0, 0, 0, 1]);
            out.extend_from_slice(nal);
        }
    }
    out
}

/// An access unit as stored in MP4/Matroska (NAL units each after a
/// big-endian length of `length_size` bytes, parameter sets in the avcC
/// `config`) turned back into Annex-B, with the avcC's SPS and PPS first
/// when `with_parameter_sets` (what a decoder starting at a keyframe of a
/// file needs). `None` when `config` or the unit is malformed.
pub fn annex_b_from_avcc(config: &[u8], unit: &[u8], with_parameter_sets: bool) -> Option<Vec<u8>> {
    const START: [u8; 4] = [0, 0, 0, 1];
    if config.len() < 7 || config[0] != 1 {
        return None;
    }
    let length_size = usize::from(config[4] & 3) + 1;
    let mut out = Vec::with_capacity(unit.len() + 64);
    if with_parameter_sets {
        let mut at = 5;
        for kind in 0..2 {
            let count = usize::from(*config.get(at)?) & if kind == 0 { 31 } else { 255 };
            at += 1;
            for _ in 0..count {
                let len = usize::from(u16::from_be_bytes([*config.get(at)?, *config.get(at + 1)?]));
                let nal = config.get(at + 2..at + 2 + len)?;
                out.extend_from_slice(&START);
                out.extend_from_slice(nal);
                at += 2 + len;
            }
        }
    }
    let mut at = 0;
    while at < unit.len() {
        let head = unit.get(at..at + length_size)?;
        let len = head.iter().fold(0usize, |n, b| (n << 8) | usize::from(*b));
        let nal = unit.get(at + length_size..at + length_size + len)?;
        out.extend_from_slice(&START);
        out.extend_from_slice(nal);
        at += length_size + len;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avcc_units_become_annex_b_with_the_parameter_sets() {
        // avcC: version 1, profile/compat/level, 4-byte lengths, 1 SPS, 1 PPS.
        let config = [1, 0x42, 0, 0x1e, 0xff, 0xe1, 0, 2, 0x67, 1, 1, 0, 1, 0x68];
        let unit = [0, 0, 0, 2, 0x65, 9, 0, 0, 0, 1, 0x06];
        assert_eq!(
            annex_b_from_avcc(&config, &unit, true).unwrap(),
            vec![
                0, 0, 0, 1, 0x67, 1, 0, 0, 0, 1, 0x68, 0, 0, 0, 1, 0x65, 9, 0, 0, 0, 1, 0x06
            ]
        );
        assert_eq!(
            annex_b_from_avcc(&config, &unit, false).unwrap(),
            vec![0, 0, 0, 1, 0x65, 9, 0, 0, 0, 1, 0x06]
        );
        assert!(annex_b_from_avcc(&config, &[0, 0, 0, 9, 0x65], false).is_none());
        assert!(annex_b_from_avcc(&[1, 2], &unit, true).is_none());
        assert!(annex_b_from_avcc(&config[..9], &unit, true).is_none());
    }

    #[test]
    fn finds_parameter_sets_with_either_start_code() {
        let au = [
            0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 0, 1, 0x65, 9, 9,
        ];
        assert_eq!(
            parameter_sets(&au),
            vec![0, 0, 0, 1, 0x67, 1, 2, 0, 0, 0, 1, 0x68, 3]
        );
        let types: Vec<u8> = nal_units(&au).filter_map(nal_type).collect();
        assert_eq!(types, [7, 8, 5]);
        assert!(parameter_sets(&[0x65, 1, 2]).is_empty(), "no start code");
        assert!(parameter_sets(&[]).is_empty());
    }

    #[test]
    fn emulation_prevention_is_removed() {
        assert_eq!(unescape_rbsp(&[0, 0, 3, 1, 0, 0, 3]), vec![0, 0, 1, 0, 0]);
    }
}
