//! A short text written on the stack: for a `Display` made of many small pieces, which hands its
//! writer the whole text at once when it fits. A writer that does work per write (the JSON log
//! escapes each one) then does it once.

use std::fmt;

/// Up to `N` bytes of text, on the stack; a write that would take it past `N` fails, and leaves
/// what was written.
pub(crate) struct Inline<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> Inline<N> {
    pub(crate) fn new() -> Self {
        Self { buf: [0; N], len: 0 }
    }

    /// What was written.
    pub(crate) fn as_str(&self) -> &str {
        // Only whole `str`s were copied in, so this is UTF-8.
        self.buf.get(..self.len).and_then(|written| std::str::from_utf8(written).ok()).unwrap_or_default()
    }
}

impl<const N: usize> fmt::Write for Inline<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len.checked_add(s.len()).ok_or(fmt::Error)?;
        let room = self.buf.get_mut(self.len..end).ok_or(fmt::Error)?;
        room.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;

    use super::Inline;

    #[test]
    fn text_up_to_the_size_fits_and_a_piece_past_it_fails_leaving_what_fit() {
        let mut text = Inline::<8>::new();
        assert_eq!(text.as_str(), "");
        text.write_str("ab").unwrap();
        text.write_str("cdé").unwrap();
        assert_eq!(text.as_str(), "abcdé");
        assert!(text.write_str("xyz").is_err(), "9 bytes do not fit in 8");
        assert_eq!(text.as_str(), "abcdé");
        text.write_str("x").unwrap();
        assert!(text.write_str("yz").is_err());
        text.write_str("y").unwrap();
        assert_eq!(text.as_str(), "abcdéxy", "exactly full");
        assert!(text.write_str("z").is_err());
        assert_eq!(text.as_str(), "abcdéxy");
    }
}
