//! One continuous VP8 picture id sequence for a viewer that moves between
//! simulcast layers.
//!
//! Each layer of a VP8 simulcast stream numbers its pictures on its own
//! (RFC 7741 payload descriptor: PictureID, TL0PICIDX). A receiver orders
//! frames by picture id, so after a switch to a layer whose ids are behind
//! the old one's it takes the new pictures for old ones and drops them until
//! the ids catch up: a long freeze. A viewer's ids therefore continue from
//! the last one it was sent: at a switch the new layer's ids are offset so
//! that its keyframe follows the old layer's last picture. A viewer that
//! never switches is sent the publisher's ids untouched.
//!
//! The fields are read here (str0m parses the descriptor but does not expose
//! the values) and written by str0m's [`Vp8Patch`] as the packet is sent, so
//! the shared payloads are never copied.

use str0m::rtp::{Vp8Descriptor, Vp8Patch};

use crate::stream::LayerId;

/// The renumbering of one viewer's VP8 track.
#[derive(Debug, Default)]
pub struct Vp8Ids {
    /// The layer of the frames written last.
    layer: Option<LayerId>,
    /// Added to the layer's picture ids (modulo their width).
    picture_delta: u16,
    /// Added to the layer's TL0PICIDX.
    tl0_delta: u8,
    last_picture: Option<u16>,
    last_tl0: Option<u8>,
}

/// The fields of one packet's payload descriptor a switch renumbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ids {
    /// PictureID, if present.
    pub picture_id: Option<u16>,
    /// Whether the PictureID is 15 bits wide (else 7).
    pub wide: bool,
    /// TL0PICIDX, if present.
    pub tl0: Option<u8>,
}

impl Ids {
    /// Reads the fields from an RTP payload (RFC 7741 section 4.2); `None`
    /// if the descriptor is cut short.
    pub fn read(payload: &[u8]) -> Option<Ids> {
        let mut ids = Ids {
            picture_id: None,
            wide: false,
            tl0: None,
        };
        let first = *payload.first()?;
        if first & 0x80 == 0 {
            return Some(ids);
        }
        let extension = *payload.get(1)?;
        let mut at = 2;
        if extension & 0x80 != 0 {
            let high = *payload.get(at)?;
            at += 1;
            if high & 0x80 != 0 {
                let low = *payload.get(at)?;
                at += 1;
                ids.picture_id = Some((u16::from(high & 0x7f) << 8) | u16::from(low));
                ids.wide = true;
            } else {
                ids.picture_id = Some(u16::from(high & 0x7f));
            }
        }
        if extension & 0x40 != 0 {
            ids.tl0 = Some(*payload.get(at)?);
        }
        Some(ids)
    }
}

impl Vp8Ids {
    /// The ids to send a packet with whose payload has `ids`, of a frame of
    /// `layer` (`first`: its first packet); `None` when they are the
    /// publisher's own.
    pub fn renumber(&mut self, layer: LayerId, first: bool, ids: Ids) -> Option<Ids> {
        if first && self.layer != Some(layer) {
            if self.layer.is_some() {
                // A switch: this frame (the new layer's keyframe) follows
                // the last one sent.
                if let (Some(last), Some(id)) = (self.last_picture, ids.picture_id) {
                    self.picture_delta = last.wrapping_add(1).wrapping_sub(id);
                }
                if let (Some(last), Some(tl0)) = (self.last_tl0, ids.tl0) {
                    self.tl0_delta = last.wrapping_add(1).wrapping_sub(tl0);
                }
            }
            self.layer = Some(layer);
        }
        let width = if ids.wide { 0x7fff } else { 0x7f };
        let out = Ids {
            picture_id: ids
                .picture_id
                .map(|id| id.wrapping_add(self.picture_delta) & width),
            wide: ids.wide,
            tl0: ids.tl0.map(|t| t.wrapping_add(self.tl0_delta)),
        };
        if out.picture_id.is_some() {
            self.last_picture = out.picture_id;
        }
        if out.tl0.is_some() {
            self.last_tl0 = out.tl0;
        }
        (out != ids).then_some(out)
    }

    /// The patch that sends `payload` (a packet of a frame of `layer`) with
    /// this viewer's ids, if they differ from the publisher's.
    pub fn patch(&mut self, layer: LayerId, first: bool, payload: &[u8]) -> Option<Vp8Patch> {
        let ids = Ids::read(payload)?;
        let out = self.renumber(layer, first, ids)?;
        let mut patch = Vp8Descriptor::parse(payload).ok()?.patch();
        if let Some(id) = out.picture_id {
            patch = patch.picture_id(id);
        }
        if let Some(tl0) = out.tl0 {
            patch = patch.tl0_pic_idx(tl0);
        }
        patch.build().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A payload descriptor with a 15-bit PictureID and a TL0PICIDX.
    fn payload(picture_id: u16, tl0: u8) -> Vec<u8> {
        vec![
            0x90, // X, S (start of partition)
            0xe0, // I, L, T
            0x80 | (picture_id >> 8) as u8,
            picture_id as u8,
            tl0,
            0x00, // TID/KEYIDX
            0x10, // VP8 payload
        ]
    }

    #[test]
    fn reads_the_descriptor() {
        let ids = Ids::read(&payload(0x1234, 9)).unwrap();
        assert_eq!(ids.picture_id, Some(0x1234));
        assert!(ids.wide);
        assert_eq!(ids.tl0, Some(9));
        // 7-bit id, no TL0PICIDX.
        let ids = Ids::read(&[0x90, 0x80, 0x05, 0x10]).unwrap();
        assert_eq!((ids.picture_id, ids.wide, ids.tl0), (Some(5), false, None));
        // No extension at all.
        assert_eq!(Ids::read(&[0x10, 0x00]).unwrap().picture_id, None);
        // Cut short.
        assert_eq!(Ids::read(&[0x90, 0xe0, 0x81]), None);
        assert_eq!(Ids::read(&[]), None);
    }

    #[test]
    fn one_layer_keeps_the_publishers_ids() {
        let mut v = Vp8Ids::default();
        for id in 100..200u16 {
            let ids = Ids::read(&payload(id, id as u8)).unwrap();
            assert_eq!(v.renumber(2, true, ids), None);
            assert!(v.patch(2, false, &payload(id, id as u8)).is_none());
        }
    }

    #[test]
    fn a_switch_continues_the_sequence_both_ways() {
        let mut v = Vp8Ids::default();
        for id in 5000..5010u16 {
            v.renumber(0, true, Ids::read(&payload(id, 7)).unwrap());
        }
        // To a layer whose ids are far behind (and across the 15-bit wrap).
        let out = v.renumber(1, true, Ids::read(&payload(32760, 200)).unwrap());
        assert_eq!(
            out.map(|o| (o.picture_id, o.tl0)),
            Some((Some(5010), Some(8)))
        );
        // The rest of its frames follow, every packet of a frame alike.
        let out = v.renumber(1, false, Ids::read(&payload(32760, 200)).unwrap());
        assert_eq!(out.and_then(|o| o.picture_id), Some(5010));
        for (n, id) in [32761u16, 32762, 32763, 32764, 32765, 32766, 32767, 0, 1]
            .into_iter()
            .enumerate()
        {
            let out = v.renumber(1, true, Ids::read(&payload(id, 201)).unwrap());
            assert_eq!(out.and_then(|o| o.picture_id), Some(5011 + n as u16));
        }
        // And back to the first layer, ahead now: still one more.
        let out = v.renumber(0, true, Ids::read(&payload(5100, 9)).unwrap());
        assert_eq!(
            out.map(|o| (o.picture_id, o.tl0)),
            Some((Some(5020), Some(10)))
        );
    }

    #[test]
    fn seven_bit_ids_wrap_at_their_width() {
        let mut v = Vp8Ids::default();
        v.renumber(0, true, Ids::read(&[0x90, 0x80, 127, 0x10]).unwrap());
        let out = v.renumber(1, true, Ids::read(&[0x90, 0x80, 40, 0x10]).unwrap());
        assert_eq!(out.and_then(|o| o.picture_id), Some(0));
    }

    #[test]
    fn the_patch_is_built_for_a_renumbered_packet() {
        let mut v = Vp8Ids::default();
        v.patch(0, true, &payload(300, 1));
        assert!(v.patch(1, true, &payload(20, 1)).is_some());
        // A packet with nothing to renumber needs no patch.
        assert!(v.patch(1, false, &[0x10, 0x00]).is_none());
    }
}
