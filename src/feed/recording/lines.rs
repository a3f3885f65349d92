//! Bytes to lines: a recording's decompression (by magic bytes), and its
//! lines read with a cap on their length.

use std::io::{self, BufRead, BufReader};

/// Decompressed bytes read per system call.
pub(super) const READ_BUF: usize = 1 << 16;

pub(crate) fn decompress<R: BufRead + Send + 'static>(
    mut src: R,
) -> io::Result<Box<dyn BufRead + Send>> {
    let head = src.fill_buf()?;
    Ok(if head.starts_with(&[0x1f, 0x8b]) {
        // Multi-member, so that concatenated gzip files (`cat a.gz b.gz`)
        // read as one.
        let gz = flate2::bufread::MultiGzDecoder::new(src);
        Box::new(BufReader::with_capacity(READ_BUF, gz))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        let zst = zstd::stream::read::Decoder::with_buffer(src)?;
        Box::new(BufReader::with_capacity(READ_BUF, zst))
    } else {
        Box::new(src)
    })
}

pub(super) fn trim_ascii(line: &mut [u8]) -> &mut [u8] {
    let start = line
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(line.len());
    let end = line
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    &mut line[start..end]
}

/// Reads through the next newline (or the end), keeping at most `max`
/// bytes of the line in `line`: the rest of a longer line is read and
/// dropped. Returns the bytes read and whether the line was cut.
pub(super) fn read_capped_line(
    src: &mut impl BufRead,
    line: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<(usize, bool)> {
    let (mut read, mut cut) = (0, false);
    loop {
        let buf = match src.fill_buf() {
            Ok(buf) => buf,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            return Ok((read, cut));
        }
        let (chunk, end) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..=i], true),
            None => (buf, false),
        };
        let room = max.saturating_sub(line.len());
        cut |= chunk.len() > room;
        line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        let n = chunk.len();
        src.consume(n);
        read += n;
        if end {
            return Ok((read, cut));
        }
    }
}
