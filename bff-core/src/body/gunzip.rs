//! A gzip body decoded whole, under a limit on what it decodes to (RFC 1952).
//!
//! flate2's `GzDecoder` makes a new inflate state for every body (about 40 KiB, zeroed, then
//! moved into place) and reads through a buffer of its own: for a small body that costs several
//! times the inflating. Here each thread keeps one inflate state and resets it, and the members'
//! headers and trailers are read from the slice in place.

use std::cell::RefCell;

use flate2::{Crc, Decompress, FlushDecompress, Status};

/// Why a body did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum GunzipError {
    /// It decodes to more than the limit (found by decoding one byte past it, no further).
    #[error("it decodes to more than {0} bytes")]
    TooLarge(usize),
    /// It is not gzip, or its checksum or length does not match what it decodes to.
    #[error("the body is not valid gzip: {0}")]
    Invalid(&'static str),
}

/// The header flags (RFC 1952 §2.3.1).
const FHCRC: u8 = 0x02;
const FEXTRA: u8 = 0x04;
const FNAME: u8 = 0x08;
const FCOMMENT: u8 = 0x10;
const RESERVED: u8 = 0xe0;

/// A body that ends before its member, its data or its trailer does.
const CUT_SHORT: GunzipError = GunzipError::Invalid("it is cut short");

/// Output is made room for in steps of at most this, so a body's buffer grows with what it
/// decodes to, not with the limit.
const STEP: usize = 16 * 1024;

thread_local! {
    /// This thread's inflate state, reset for each member.
    static INFLATE: RefCell<Option<Decompress>> = const { RefCell::new(None) };
}

/// `compressed` (one member or several, §2.2) decoded, at most `limit` bytes of it.
pub(crate) fn gunzip(compressed: &[u8], limit: usize) -> Result<Vec<u8>, GunzipError> {
    INFLATE.with(|cell| match cell.try_borrow_mut() {
        Ok(mut state) => members(compressed, limit, state.get_or_insert_with(|| Decompress::new(false))),
        // Only re-entered if decoding itself decoded (it does not): a state of its own then.
        Err(_) => members(compressed, limit, &mut Decompress::new(false)),
    })
}

fn members(mut input: &[u8], limit: usize, inflate: &mut Decompress) -> Result<Vec<u8>, GunzipError> {
    let mut out = Vec::new();
    if input.is_empty() {
        return Err(GunzipError::Invalid("it is empty"));
    }
    while !input.is_empty() {
        let body = header(input)?;
        let start = out.len();
        inflate.reset(false);
        let data = input.get(body..).ok_or(CUT_SHORT)?;
        let used = inflate_member(data, limit, inflate, &mut out)?;
        let (trailer, rest) = data.get(used..).and_then(<[u8]>::split_first_chunk::<8>).ok_or(CUT_SHORT)?;
        let (sum, size_mod) = trailer.split_at(4);
        let mut crc = Crc::new();
        crc.update(out.get(start..).unwrap_or_default());
        // ISIZE is the length modulo 2^32.
        let size = (out.len() - start) as u64 as u32;
        if sum != crc.sum().to_le_bytes() {
            return Err(GunzipError::Invalid("its checksum does not match"));
        }
        if size_mod != size.to_le_bytes() {
            return Err(GunzipError::Invalid("its length does not match"));
        }
        input = rest;
    }
    Ok(out)
}

/// Where a member's compressed data starts, after its header.
fn header(member: &[u8]) -> Result<usize, GunzipError> {
    let fixed = member.first_chunk::<10>().ok_or(CUT_SHORT)?;
    if fixed[..3] != [0x1f, 0x8b, 8] {
        return Err(GunzipError::Invalid("it does not start as gzip does"));
    }
    let flags = fixed[3];
    if flags & RESERVED != 0 {
        return Err(GunzipError::Invalid("its header sets reserved flags"));
    }
    let mut at = 10;
    if flags & FEXTRA != 0 {
        let length = member.get(at..).and_then(<[u8]>::first_chunk::<2>).ok_or(CUT_SHORT)?;
        at += 2 + usize::from(u16::from_le_bytes(*length));
    }
    for flag in [FNAME, FCOMMENT] {
        if flags & flag != 0 {
            let rest = member.get(at..).ok_or(CUT_SHORT)?;
            at += 1 + rest.iter().position(|&b| b == 0).ok_or(CUT_SHORT)?;
        }
    }
    if flags & FHCRC != 0 {
        let stored = member.get(at..).and_then(<[u8]>::first_chunk::<2>).ok_or(CUT_SHORT)?;
        let mut crc = Crc::new();
        crc.update(member.get(..at).unwrap_or_default());
        if u16::from_le_bytes(*stored) != (crc.sum() & 0xffff) as u16 {
            return Err(GunzipError::Invalid("its header checksum does not match"));
        }
        at += 2;
    }
    if at > member.len() {
        return Err(CUT_SHORT);
    }
    Ok(at)
}

/// Inflates one member's deflate data from `input` onto `out`, no further than `limit` bytes in
/// all; how many bytes of `input` it took.
fn inflate_member(
    input: &[u8],
    limit: usize,
    inflate: &mut Decompress,
    out: &mut Vec<u8>,
) -> Result<usize, GunzipError> {
    let taken = |inflate: &Decompress| usize::try_from(inflate.total_in()).unwrap_or(usize::MAX);
    loop {
        if out.len() > limit {
            return Err(GunzipError::TooLarge(limit));
        }
        // One byte past the limit shows the body is over it.
        let room = limit.saturating_add(1).saturating_sub(out.len()).min(STEP);
        out.reserve(room);
        let before = (taken(inflate), out.len());
        let rest = input.get(before.0..).unwrap_or_default();
        let status = inflate
            // Not `Finish`: with it, miniz takes the output room given as all there is.
            .decompress_vec(rest, out, FlushDecompress::None)
            .map_err(|_| GunzipError::Invalid("its compressed data is corrupt"))?;
        match status {
            Status::StreamEnd => {
                return if out.len() > limit { Err(GunzipError::TooLarge(limit)) } else { Ok(taken(inflate)) };
            }
            // No input taken and no output made: the data ends before its end.
            _ if (taken(inflate), out.len()) == before => return Err(CUT_SHORT),
            _ => {}
        }
    }
}

/// `data` in gzip, one member, as a client sends it: for tests.
#[cfg(test)]
pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    /// What flate2's own decoder reads, this reads the same; what it refuses, this refuses.
    #[test]
    fn it_decodes_as_flate2_does() {
        let text: Vec<u8> = (0..100_000u32).flat_map(|i| format!("{i},").into_bytes()).collect();
        for data in [&b""[..], b"{}", &text] {
            let decoded = gunzip(&gzip(data), usize::MAX);
            assert!(decoded.as_deref() == Ok(data), "{} bytes: {:?}", data.len(), decoded.map(|d| d.len()));
        }
        // Several members, one after another; a header with a name, a comment, an extra field
        // and its own checksum.
        let two = [gzip(b"{\"a\":"), gzip(b"1}")].concat();
        assert_eq!(gunzip(&two, 100).unwrap(), b"{\"a\":1}");
        let mut named = flate2::GzBuilder::new()
            .filename("order.json")
            .comment("c")
            .extra(vec![1, 2, 3])
            .write(Vec::new(), flate2::Compression::fast());
        named.write_all(b"[1]").unwrap();
        let mut named = named.finish().unwrap();
        assert_eq!(gunzip(&named, 100).unwrap(), b"[1]");
        // The header checksum (FHCRC), which GzBuilder does not write: added by hand.
        named[3] |= FHCRC;
        let end = header_end_without_crc(&named);
        let mut crc = Crc::new();
        crc.update(&named[..end]);
        let sum = (crc.sum() & 0xffff) as u16;
        named.splice(end..end, sum.to_le_bytes());
        assert_eq!(gunzip(&named, 100).unwrap(), b"[1]");
        named[end] ^= 1;
        assert_eq!(gunzip(&named, 100), Err(GunzipError::Invalid("its header checksum does not match")));
    }

    fn header_end_without_crc(member: &[u8]) -> usize {
        let mut copy = member.to_vec();
        copy[3] &= !FHCRC;
        header(&copy).unwrap()
    }

    /// A deflate stream may refer back past its own start. Here that reads zeros, never what the
    /// thread's last body left in the window: a reset that kept the window (miniz_oxide's
    /// `MinReset`, cheaper by a 32 KiB `memset`) would let a crafted body copy the bytes of
    /// another request's body into its own.
    #[test]
    fn a_body_cannot_read_the_body_decoded_before_it() {
        assert_eq!(gunzip(&gzip(&[b'S'; 1000]), 10_000).unwrap(), [b'S'; 1000]);
        // One fixed-Huffman block: a copy of 10 bytes from 32 KiB back (the window's whole
        // length), at the very start, then its end.
        let mut bits = Bits::default();
        bits.push(1, 1); // the final block
        bits.push(1, 2); // fixed Huffman codes
        bits.code(0b000_1000, 7); // length 10 (code 264)
        bits.code(29, 5); // distance 24,577 + 8,191 (code 29, then 13 extra bits)
        bits.push(8191, 13);
        bits.code(0, 7); // end of block (code 256)
        let deflate = bits.bytes;
        let mut crc = Crc::new();
        crc.update(&[0; 10]);
        let member =
            [&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff][..], &deflate, &crc.sum().to_le_bytes(), &10u32.to_le_bytes()]
                .concat();
        assert_eq!(gunzip(&member, 10_000), Ok(vec![0; 10]));
        // The same block after a reset that keeps the window: the last body's bytes come through.
        use miniz_oxide::inflate::stream::{InflateState, MinReset, inflate};
        let mut state = InflateState::new_boxed(miniz_oxide::DataFormat::Raw);
        let mut out = vec![0; 2000];
        // A plain member: a 10-byte header, the deflate data, an 8-byte trailer.
        let secret = gzip(&[b'S'; 1000]);
        let deflated = &secret[10..secret.len() - 8];
        // Read as `gunzip` reads, through the window (with `Finish`, miniz writes straight out).
        assert_eq!(inflate(&mut state, deflated, &mut out, miniz_oxide::MZFlush::None).bytes_written, 1000);
        state.reset_as(MinReset);
        let written = inflate(&mut state, &deflate, &mut out, miniz_oxide::MZFlush::None).bytes_written;
        assert_eq!(&out[..written], &[b'S'; 10], "the block reads the window when it is kept");
    }

    /// Bits written as deflate packs them: values from their low bit, Huffman codes from their high.
    #[derive(Default)]
    struct Bits {
        bytes: Vec<u8>,
        used: u32,
    }

    impl Bits {
        fn push(&mut self, value: u32, count: u32) {
            for i in 0..count {
                if self.used.is_multiple_of(8) {
                    self.bytes.push(0);
                }
                let bit = u8::from(value >> i & 1 == 1);
                *self.bytes.last_mut().unwrap() |= bit << (self.used % 8);
                self.used += 1;
            }
        }

        fn code(&mut self, code: u32, length: u32) {
            for i in (0..length).rev() {
                self.push(code >> i & 1, 1);
            }
        }
    }

    /// The limit holds on what the body decodes to, at exactly the limit and one past it, and a
    /// body that would decode far past it is stopped there, its buffer never much past it.
    #[test]
    fn what_it_decodes_to_is_held_to_the_limit() {
        let limit = 50_000;
        assert_eq!(gunzip(&gzip(&vec![b' '; limit]), limit).map(|d| d.len()), Ok(limit));
        assert_eq!(gunzip(&gzip(&vec![b' '; limit + 1]), limit), Err(GunzipError::TooLarge(limit)));
        let bomb = gzip(&vec![0; 64 << 20]);
        assert!(bomb.len() < 100_000, "{}", bomb.len());
        assert_eq!(gunzip(&bomb, limit), Err(GunzipError::TooLarge(limit)));
        // Over the limit across members.
        let two = [gzip(&vec![b' '; limit / 2 + 1]), gzip(&vec![b' '; limit / 2])].concat();
        assert_eq!(gunzip(&two, limit), Err(GunzipError::TooLarge(limit)));
    }

    /// Anything that is not a whole gzip body is refused, never a panic: not gzip, cut short
    /// anywhere, a flipped bit anywhere, trailing bytes.
    #[test]
    fn anything_else_is_refused() {
        let good = gzip(b"{\"items\":[1,2,3]}");
        for cut in 0..good.len() {
            assert!(matches!(gunzip(&good[..cut], 1000), Err(GunzipError::Invalid(_))), "cut at {cut}");
        }
        // A flipped bit anywhere: refused, unless flate2's own decoder reads the same bytes from
        // it (a flip in the mtime, the OS byte or the last byte's unused bits changes nothing).
        for at in 0..good.len() {
            for bit in 0..8 {
                let mut flipped = good.clone();
                flipped[at] ^= 1 << bit;
                let mut theirs = Vec::new();
                let read = flate2::read::MultiGzDecoder::new(&flipped[..]).read_to_end(&mut theirs);
                let ours = gunzip(&flipped, 1000);
                match read {
                    Ok(_) => assert_eq!(ours, Ok(theirs), "bit {bit} of byte {at} flipped"),
                    Err(_) => assert!(ours.is_err(), "bit {bit} of byte {at} flipped"),
                }
            }
        }
        assert!(gunzip(&[good.clone(), vec![0]].concat(), 1000).is_err(), "a trailing byte");
        assert!(gunzip(b"{\"items\":[1]}", 1000).is_err());
        // Each call starts afresh, whatever the one before it left.
        assert!(gunzip(&good[..good.len() / 2], 1000).is_err());
        assert_eq!(gunzip(&good, 1000).unwrap(), b"{\"items\":[1,2,3]}");
    }
}
