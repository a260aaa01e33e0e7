//! Codec data (an avcC source, an av1C source, an `OpusHead`) handed to
//! FFmpeg, which wants it in its own padded allocation: the recorder's
//! muxer, the restream outputs and the Opus decoder all set it this way.

use ffmpeg_sys_next as sys;

/// FFmpeg could not allocate the codec data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("out of memory for codec data")]
pub struct OutOfMemory;

/// A copy of `data` in FFmpeg-owned memory with the input padding FFmpeg
/// requires, and its length: for `extradata` / `extradata_size` of codec
/// parameters or a codec context (which then own and free it). `None` for
/// empty data (no codec data).
pub fn copy(data: &[u8]) -> Result<Option<(*mut u8, i32)>, OutOfMemory> {
    if data.is_empty() {
        return Ok(None);
    }
    let len = i32::try_from(data.len()).map_err(|_| OutOfMemory)?;
    let pad = sys::AV_INPUT_BUFFER_PADDING_SIZE as usize;
    // SAFETY: av_mallocz returns zeroed memory of the asked size or null.
    let buf = unsafe { sys::av_mallocz(data.len() + pad) } as *mut u8;
    if buf.is_null() {
        return Err(OutOfMemory);
    }
    // SAFETY: buf has room for data.len() + pad bytes; they do not overlap.
    unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), buf, data.len()) };
    Ok(Some((buf, len)))
}

/// Sets `data` as the codec data of `par`.
///
/// # Safety
/// `par` must point to valid codec parameters that hold no codec data yet.
pub unsafe fn set(par: *mut sys::AVCodecParameters, data: &[u8]) -> Result<(), OutOfMemory> {
    if let Some((buf, len)) = copy(data)? {
        // SAFETY: par is valid per the contract; it takes ownership of buf.
        unsafe {
            (*par).extradata = buf;
            (*par).extradata_size = len;
        }
    }
    Ok(())
}
