//! Decompression of repository indexes (xz, gzip, zstd, lz4), chosen by magic bytes so a file
//! is read correctly whatever it is called (`Packages.xz`, apt's `.lz4`).

use std::io::Read;

use crate::error::DepsolveError;

/// Decompresses `data` (xz, gzip, lz4 frame or plain) into UTF-8 text.
pub fn decompress_to_string(file: &str, data: &[u8]) -> Result<String, DepsolveError> {
    let err = |detail: String| DepsolveError::Decompress {
        file: file.to_string(),
        detail,
    };
    let bytes = if data.starts_with(&[0xFD, b'7', b'z', b'X', b'Z', 0x00]) {
        let mut out = Vec::with_capacity(data.len() * 6);
        xz2::read::XzDecoder::new(data)
            .read_to_end(&mut out)
            .map_err(|e| err(format!("xz: {e}")))?;
        out
    } else if data.starts_with(&[0x1F, 0x8B]) {
        let mut out = Vec::with_capacity(data.len() * 5);
        flate2::read::MultiGzDecoder::new(data)
            .read_to_end(&mut out)
            .map_err(|e| err(format!("gzip: {e}")))?;
        out
    } else if data.starts_with(&[0x04, 0x22, 0x4D, 0x18]) {
        let mut out = Vec::with_capacity(data.len() * 5);
        lz4_flex::frame::FrameDecoder::new(data)
            .read_to_end(&mut out)
            .map_err(|e| err(format!("lz4: {e}")))?;
        out
    } else if data.starts_with(&[0x28, 0xB5, 0x2F, 0xFD]) {
        zstd::stream::decode_all(data).map_err(|e| err(format!("zstd: {e}")))?
    } else {
        data.to_vec()
    };
    String::from_utf8(bytes).map_err(|e| err(format!("not UTF-8 text: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn round_trips_every_format() {
        let text = "Package: a\nVersion: 1\n\n".repeat(100);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(text.as_bytes()).unwrap();
        let gz = gz.finish().unwrap();
        let mut xz = xz2::write::XzEncoder::new(Vec::new(), 6);
        xz.write_all(text.as_bytes()).unwrap();
        let xz = xz.finish().unwrap();
        let mut lz = lz4_flex::frame::FrameEncoder::new(Vec::new());
        lz.write_all(text.as_bytes()).unwrap();
        let lz = lz.finish().unwrap();
        let zst = zstd::stream::encode_all(text.as_bytes(), 3).unwrap();
        for data in [gz, xz, lz, zst, text.clone().into_bytes()] {
            assert_eq!(decompress_to_string("f", &data).unwrap(), text);
        }
    }

    #[test]
    fn corrupt_data_names_the_file() {
        let bad = [0xFD, b'7', b'z', b'X', b'Z', 0x00, 1, 2, 3];
        let e = decompress_to_string("dists/x/Packages.xz", &bad).unwrap_err();
        assert!(e.to_string().contains("dists/x/Packages.xz"));
    }
}
