//! Debian version ordering (Debian Policy §5.6.12), written from the policy
//! text: `[epoch:]upstream[-revision]`, compared part by part with the
//! alternating non-digit / digit algorithm where `~` sorts before anything,
//! even the end of the string.

use std::cmp::Ordering;

/// Compares two Debian version strings.
pub fn compare(a: &str, b: &str) -> Ordering {
    let (ea, ua, ra) = split(a);
    let (eb, ub, rb) = split(b);
    ea.cmp(&eb)
        .then_with(|| compare_part(ua, ub))
        .then_with(|| compare_part(ra, rb))
}

/// Splits into (epoch, upstream, revision). A missing epoch is 0, a missing
/// revision is empty (which compares equal to "0", as dpkg does).
fn split(v: &str) -> (u64, &str, &str) {
    let (epoch, rest) = match v.find(':') {
        Some(i) => (v[..i].parse().unwrap_or(0), &v[i + 1..]),
        None => (0, v),
    };
    match rest.rfind('-') {
        Some(i) => (epoch, &rest[..i], &rest[i + 1..]),
        None => (epoch, rest, ""),
    }
}

/// Sort weight of one character in a non-digit run: `~` first, then the end
/// of the run, then letters, then everything else.
fn weight(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(b'~') => -1,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => c as i32,
        Some(c) => c as i32 + 256,
    }
}

fn compare_part(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        // Non-digit run.
        while (i < a.len() && !a[i].is_ascii_digit()) || (j < b.len() && !b[j].is_ascii_digit()) {
            let wa = weight(a.get(i).copied());
            let wb = weight(b.get(j).copied());
            if wa != wb {
                return wa.cmp(&wb);
            }
            i += 1;
            j += 1;
        }
        // Digit run, compared numerically without overflow.
        while i < a.len() && a[i] == b'0' {
            i += 1;
        }
        while j < b.len() && b[j] == b'0' {
            j += 1;
        }
        let si = i;
        let sj = j;
        while i < a.len() && a[i].is_ascii_digit() {
            i += 1;
        }
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        let (da, db) = (&a[si..i], &b[sj..j]);
        let ord = da.len().cmp(&db.len()).then_with(|| da.cmp(db));
        if ord != Ordering::Equal {
            return ord;
        }
    }
    Ordering::Equal
}

#[cfg(test)]
mod tests {
    use super::compare;
    use std::cmp::Ordering::{Equal, Greater, Less};

    #[test]
    fn orders_like_dpkg() {
        let cases = [
            ("1.0", "1.0", Equal),
            ("1.0", "1.1", Less),
            ("1.10", "1.9", Greater),
            ("1.0~rc1", "1.0", Less),
            ("1.0~rc1", "1.0~rc2", Less),
            ("1.0~~", "1.0~", Less),
            ("1.0~", "1.0", Less),
            ("1.0", "1.0+b1", Less),
            ("1.0a", "1.0", Greater),
            ("1.0a", "1.0+", Less),
            ("1:0.1", "2.0", Greater),
            ("0:2.0", "2.0", Equal),
            ("2.0-1", "2.0-1", Equal),
            ("2.0-1", "2.0-2", Less),
            ("2.0-10", "2.0-9", Greater),
            ("2.0", "2.0-0", Equal),
            ("1.2.3-1", "1.2.3-1~deb12u1", Greater),
            ("252.39-1~deb12u2", "252.38-1~deb12u1", Greater),
            ("1.000", "1.0", Equal),
            ("1.0.0", "1.0", Greater),
            ("1.0-1-1", "1.0-1-2", Less),
            ("1.0-a", "1.0-b", Less),
            ("1.a", "1.+", Less),
            (
                "1.99999999999999999999999",
                "1.100000000000000000000000",
                Less,
            ),
            ("10:1", "9:2", Greater),
            ("2:1.02.185-2", "2:1.02.185-2", Equal),
            ("1.9.4-1", "1.9.4-1+b1", Less),
        ];
        for (a, b, want) in cases {
            assert_eq!(compare(a, b), want, "{a} vs {b}");
            assert_eq!(compare(b, a), want.reverse(), "{b} vs {a}");
        }
    }

    #[test]
    fn sorting_is_total_and_consistent() {
        let mut v = vec![
            "1.0", "1.0~rc1", "1:0.5", "1.0-1", "0.9", "1.0+b1", "1.0~", "1.0a",
        ];
        v.sort_by(|a, b| compare(a, b));
        assert_eq!(
            v,
            vec!["0.9", "1.0~", "1.0~rc1", "1.0", "1.0-1", "1.0a", "1.0+b1", "1:0.5"]
        );
    }
}
