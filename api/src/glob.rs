//! Name patterns: `*` stands for any run of characters, `?` for any one.
//! Package search and boot grants match names with them; in linear time per
//! name (a `*` is backtracked to once, never recursively).

/// `pattern` matches all of `name`.
pub fn matches(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    let (mut pi, mut ni) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::matches as glob_match;

    #[test]
    fn globs() {
        assert!(glob_match("lib*", "libc6"));
        assert!(glob_match("*ssh*", "openssh-server"));
        assert!(glob_match("vim-tin?", "vim-tiny"));
        assert!(!glob_match("vim", "vim-tiny"));
        assert!(glob_match("*", ""));
    }
}
