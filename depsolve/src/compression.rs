//! Decompression of repository indexes (xz, gzip, zstd, lz4), chosen by magic bytes so a file
//! is read correctly whatever it is called (`Packages.xz`, apt's `.lz4`).

use std::io::Read;

use crate::error::DepsolveError;

/// Decompresses `data` (xz, gzip, lz4 frame, zstd or plain) into UTF-8
/// text, within the default bound on the decompressed size.
pub fn decompress_to_string(file: &str, data: &[u8]) -> Result<String, DepsolveError> {
    decompress_within(
        file,
        data,
        crate::fetch::FetchLimits::default().max_index_bytes,
    )
}

/// Decompresses `data` into UTF-8 text of at most `max` bytes: a file that
/// would be larger (a decompression bomb) is refused once `max` bytes are
/// out, before more memory is taken.
pub fn decompress_within(file: &str, data: &[u8], max: u64) -> Result<String, DepsolveError> {
    let err = |detail: String| DepsolveError::Decompress {
        file: file.to_string(),
        detail,
    };
    let mut out = Vec::new();
    let read = |reader: &mut dyn Read, out: &mut Vec<u8>, name: &str| {
        reader
            .take(max.saturating_add(1))
            .read_to_end(out)
            .map_err(|e| err(format!("{name}: {e}")))
    };
    if data.starts_with(&[0xFD, b'7', b'z', b'X', b'Z', 0x00]) {
        read(&mut xz2::read::XzDecoder::new(data), &mut out, "xz")?;
    } else if data.starts_with(&[0x1F, 0x8B]) {
        read(
            &mut flate2::read::MultiGzDecoder::new(data),
            &mut out,
            "gzip",
        )?;
    } else if data.starts_with(&[0x04, 0x22, 0x4D, 0x18]) {
        read(
            &mut lz4_flex::frame::FrameDecoder::new(data),
            &mut out,
            "lz4",
        )?;
    } else if data.starts_with(&[0x28, 0xB5, 0x2F, 0xFD]) {
        let mut z =
            zstd::stream::read::Decoder::new(data).map_err(|e| err(format!("zstd: {e}")))?;
        read(&mut z, &mut out, "zstd")?;
    } else {
        out = data.to_vec();
    }
    if out.len() as u64 > max {
        return Err(DepsolveError::TooLarge {
            what: format!("{file} (decompressed)"),
            limit: max,
        });
    }
    String::from_utf8(out).map_err(|e| err(format!("not UTF-8 text: {e}")))
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
    fn a_decompression_bomb_stops_at_the_bound() {
        // 64 MiB of zeros: ~64 KiB as gzip, ~10 KiB as xz or zstd.
        let zeros = vec![0u8; 64 << 20];
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&zeros).unwrap();
        let zst = zstd::stream::encode_all(&zeros[..], 1).unwrap();
        for bomb in [gz.finish().unwrap(), zst] {
            assert!(bomb.len() < 1 << 20);
            let e = decompress_within("dists/x/Packages.gz", &bomb, 8 << 20).unwrap_err();
            assert_eq!(
                e.to_string(),
                "dists/x/Packages.gz (decompressed): larger than the limit of 8388608 bytes"
            );
            assert!(decompress_within("f", &bomb, 64 << 20).is_ok());
        }
        let plain = "Package: a\n".repeat(10);
        assert!(decompress_within("f", plain.as_bytes(), 10).is_err());
    }

    #[test]
    fn corrupt_data_names_the_file() {
        let bad = [0xFD, b'7', b'z', b'X', b'Z', 0x00, 1, 2, 3];
        let e = decompress_to_string("dists/x/Packages.xz", &bad).unwrap_err();
        assert!(e.to_string().contains("dists/x/Packages.xz"));
    }
}
