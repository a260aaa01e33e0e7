//! RFC 4571 framing, as ICE-TCP (RFC 6544) uses it: every packet on the byte
//! stream is preceded by its length as a 16-bit big-endian number.
//!
//! [`Decoder`] turns whatever the socket hands over (split packets, several
//! packets at once) back into packets, and refuses lengths no WebRTC packet
//! has, so a garbage stream is detected after two bytes and never buffers
//! more than one packet.

/// Largest packet accepted or sent. WebRTC packets stay under the path MTU
/// (~1500 bytes); a length above this is garbage, not media.
pub const MAX_PACKET: usize = 4096;

/// Why a stream is not RFC 4571 framed media.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A zero length: no STUN, DTLS, RTP or RTCP packet is empty.
    #[error("zero-length frame")]
    Empty,
    /// A length above [`MAX_PACKET`].
    #[error("frame of {0} bytes, more than the {MAX_PACKET} allowed")]
    TooLong(usize),
}

/// Reassembles packets from a byte stream.
#[derive(Debug, Default)]
pub struct Decoder {
    pending: Vec<u8>,
}

impl Decoder {
    /// Adds bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
    }

    /// The next whole packet, `Ok(None)` until one is complete, or the reason
    /// the stream is garbage (the connection should be closed).
    pub fn next_packet(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        let Some(&[hi, lo]) = self.pending.get(..2) else {
            return Ok(None);
        };
        let len = usize::from(u16::from_be_bytes([hi, lo]));
        if len == 0 {
            return Err(FrameError::Empty);
        }
        if len > MAX_PACKET {
            return Err(FrameError::TooLong(len));
        }
        let Some(packet) = self.pending.get(2..2 + len) else {
            return Ok(None);
        };
        let packet = packet.to_vec();
        self.pending.drain(..2 + len);
        Ok(Some(packet))
    }

    /// Bytes held that do not make a whole packet yet.
    pub fn buffered(&self) -> usize {
        self.pending.len()
    }
}

/// `packet` with its length prefix, or `None` if it is empty or longer than
/// [`MAX_PACKET`].
pub fn encode(packet: &[u8]) -> Option<Vec<u8>> {
    if packet.is_empty() || packet.len() > MAX_PACKET {
        return None;
    }
    let len = u16::try_from(packet.len()).ok()?;
    let mut out = Vec::with_capacity(2 + packet.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(packet);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(d: &mut Decoder) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(p) = d.next_packet().unwrap() {
            out.push(p);
        }
        out
    }

    #[test]
    fn a_packet_split_over_reads_comes_out_whole() {
        let wire = encode(b"hello world").unwrap();
        assert_eq!(&wire[..2], &[0, 11]);
        let mut d = Decoder::default();
        // One byte at a time, including a split inside the length prefix.
        for (i, b) in wire.iter().enumerate() {
            assert!(drain(&mut d).is_empty(), "nothing before byte {i}");
            d.push(&[*b]);
        }
        assert_eq!(drain(&mut d), vec![b"hello world".to_vec()]);
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn two_packets_and_a_half_in_one_read() {
        let mut wire = encode(b"one").unwrap();
        wire.extend(encode(b"two!").unwrap());
        let third = encode(&[7u8; 300]).unwrap();
        wire.extend_from_slice(&third[..100]);
        let mut d = Decoder::default();
        d.push(&wire);
        assert_eq!(drain(&mut d), vec![b"one".to_vec(), b"two!".to_vec()]);
        assert_eq!(d.buffered(), 100);
        d.push(&third[100..]);
        assert_eq!(drain(&mut d), vec![vec![7u8; 300]]);
    }

    #[test]
    fn a_zero_length_is_refused() {
        let mut d = Decoder::default();
        d.push(&[0, 0, 1, 2]);
        assert_eq!(d.next_packet(), Err(FrameError::Empty));
        assert_eq!(encode(b""), None);
    }

    #[test]
    fn an_oversized_length_is_refused_before_its_bytes_arrive() {
        let mut d = Decoder::default();
        d.push(&[0xff, 0xff]);
        assert_eq!(d.next_packet(), Err(FrameError::TooLong(65_535)));
        let mut d = Decoder::default();
        let len = (MAX_PACKET + 1) as u16;
        d.push(&len.to_be_bytes());
        assert_eq!(d.next_packet(), Err(FrameError::TooLong(MAX_PACKET + 1)));
        // The largest allowed packet passes.
        let mut d = Decoder::default();
        d.push(&encode(&vec![1u8; MAX_PACKET]).unwrap());
        assert_eq!(d.next_packet().unwrap().map(|p| p.len()), Some(MAX_PACKET));
        assert_eq!(encode(&vec![1u8; MAX_PACKET + 1]), None);
    }
}
