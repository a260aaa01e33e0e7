//! AV1 in the low-overhead bitstream format (OBUs with size fields, as WebRTC
//! carries them): splitting a temporal unit into OBUs, and the sequence
//! header OBU a container's codec data (av1C) is made from.
//!
//! The input is untrusted network data: nothing here panics on any bytes.

/// OBU type of a sequence header.
pub const OBU_SEQUENCE_HEADER: u8 = 1;
/// OBU type of a frame header.
pub const OBU_FRAME_HEADER: u8 = 3;
/// OBU type of a frame (header and tile group).
pub const OBU_FRAME: u8 = 6;

/// Splits the first OBU off `data`: its type, its payload, and the bytes
/// after it. An OBU without a size field runs to the end. `None` on a set
/// forbidden bit, a truncated size or payload.
pub fn split_obu(data: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let &header = data.first()?;
    if header & 0x80 != 0 {
        return None; // obu_forbidden_bit
    }
    let obu_type = (header >> 3) & 0x0f;
    let has_extension = header & 0x04 != 0;
    let has_size = header & 0x02 != 0;
    let body = data.get(1 + usize::from(has_extension)..)?;
    if !has_size {
        return Some((obu_type, body, &[]));
    }
    let (size, size_len) = read_leb128(body)?;
    let body = body.get(size_len..)?;
    let payload = body.get(..size)?;
    let rest = body.get(size..)?;
    Some((obu_type, payload, rest))
}

/// Reads an AV1 `leb128()` value (at most 8 bytes); returns it and its length.
fn read_leb128(data: &[u8]) -> Option<(usize, usize)> {
    let mut value: u64 = 0;
    for (i, &byte) in data.iter().take(8).enumerate() {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((usize::try_from(value).ok()?, i + 1));
        }
    }
    None
}

/// The whole sequence header OBU (header, size and payload) of a temporal
/// unit, if it has one.
pub fn sequence_header_obu(temporal_unit: &[u8]) -> Option<&[u8]> {
    let mut rest = temporal_unit;
    while !rest.is_empty() {
        let (obu_type, _, next) = split_obu(rest)?;
        if obu_type == OBU_SEQUENCE_HEADER {
            return rest.get(..rest.len() - next.len());
        }
        rest = next;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_sequence_header_obu() {
        // temporal delimiter (type 2, size 0), then sequence header (type 1, size 2).
        let tu = [0x12, 0x00, 0x0a, 0x02, 0xaa, 0xbb, 0x32, 0x01, 0xcc];
        assert_eq!(
            sequence_header_obu(&tu),
            Some(&[0x0a, 0x02, 0xaa, 0xbb][..])
        );
        assert_eq!(sequence_header_obu(&[0x0a, 0x7f]), None, "truncated");
        assert_eq!(sequence_header_obu(&[0x12, 0x00]), None, "none there");
        assert_eq!(sequence_header_obu(&[0x8a, 0x00]), None, "forbidden bit");
    }

    #[test]
    fn splits_with_and_without_size_fields() {
        let (t, payload, rest) = split_obu(&[0x32, 0x01, 0xcc, 0x12, 0x00]).unwrap();
        assert_eq!((t, payload, rest), (6, &[0xcc][..], &[0x12, 0x00][..]));
        let (t, payload, rest) = split_obu(&[0x30, 1, 2, 3]).unwrap();
        assert_eq!((t, payload, rest), (6, &[1, 2, 3][..], &[][..]));
        assert!(
            split_obu(&[0x32, 0xff, 0xff]).is_none(),
            "unterminated size"
        );
    }
}
