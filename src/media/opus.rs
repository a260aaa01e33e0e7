//! What the recorder and the restreamer need to know about Opus: the
//! `OpusHead` a decoder or container takes as codec data, and the channel
//! count a packet says.

/// The 19-byte `OpusHead` (RFC 7845 §5.1) for 48 kHz with `channels` and
/// `pre_skip` samples of encoder delay (RFC 7845 §4.2), no output gain and
/// channel mapping family 0.
pub fn head(channels: u8, pre_skip: u16) -> Vec<u8> {
    let mut h = Vec::with_capacity(19);
    h.extend_from_slice(b"OpusHead");
    h.push(1);
    h.push(channels);
    h.extend_from_slice(&pre_skip.to_le_bytes());
    h.extend_from_slice(&48_000u32.to_le_bytes());
    h.extend_from_slice(&0i16.to_le_bytes());
    h.push(0);
    h
}

/// The channels a packet is coded with (its TOC byte's stereo bit); 2 for
/// an empty packet.
pub fn channels(packet: &[u8]) -> u8 {
    match packet.first() {
        Some(toc) if toc & 0x04 != 0 => 2,
        Some(_) => 1,
        None => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_and_channels() {
        let h = head(2, 312);
        assert_eq!(h.len(), 19);
        assert_eq!(&h[..8], b"OpusHead");
        assert_eq!((h[8], h[9]), (1, 2));
        assert_eq!(u16::from_le_bytes([h[10], h[11]]), 312);
        assert_eq!(u32::from_le_bytes([h[12], h[13], h[14], h[15]]), 48_000);
        assert_eq!(channels(&[0x7c]), 2);
        assert_eq!(channels(&[0x78]), 1);
        assert_eq!(channels(&[]), 2);
    }
}
