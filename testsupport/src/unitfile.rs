//! systemd unit files (and podman's quadlet files, which share their
//! syntax) for the tests of `deploy/`: parsed into sections of keys in
//! order, written back, and checked with `systemd-analyze verify`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A unit file: its sections in order, each with its assignments in order
/// (a key may repeat; an empty value resets a list, as systemd reads it).
#[derive(Debug, Clone, Default)]
pub struct UnitFile {
    pub sections: Vec<(String, Vec<(String, String)>)>,
}

impl UnitFile {
    /// Parses systemd's syntax: `[Section]` headers, `Key=Value`
    /// assignments, `#` and `;` comments, a trailing `\` joining lines.
    pub fn parse(text: &str) -> Result<UnitFile, String> {
        let mut unit = UnitFile::default();
        let mut lines = text.lines().enumerate();
        while let Some((n, raw)) = lines.next() {
            let mut line = raw.trim().to_owned();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            while line.ends_with('\\') {
                line.pop();
                line.push(' ');
                match lines.next() {
                    Some((_, more)) => line.push_str(more.trim()),
                    None => return Err(format!("line {}: continued past the end", n + 1)),
                }
            }
            if let Some(name) = line.strip_prefix('[') {
                let name = name
                    .strip_suffix(']')
                    .ok_or_else(|| format!("line {}: unclosed section header", n + 1))?;
                unit.sections.push((name.to_owned(), Vec::new()));
                continue;
            }
            let (key, value) = line
                .split_once('=')
                .ok_or_else(|| format!("line {}: neither a section nor Key=Value", n + 1))?;
            let section = unit
                .sections
                .last_mut()
                .ok_or_else(|| format!("line {}: an assignment before any section", n + 1))?;
            section
                .1
                .push((key.trim().to_owned(), value.trim().to_owned()));
        }
        Ok(unit)
    }

    /// Reads and parses a file; panics naming it when that fails.
    pub fn read(path: &Path) -> UnitFile {
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        UnitFile::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// Every assignment of `section`, in order.
    pub fn entries(&self, section: &str) -> Vec<(&str, &str)> {
        self.sections
            .iter()
            .filter(|(name, _)| name == section)
            .flat_map(|(_, entries)| entries.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .collect()
    }

    /// The values of a list setting, as systemd accumulates them: each
    /// assignment adds its (space-separated) words, an empty one clears.
    pub fn list(&self, section: &str, key: &str) -> Vec<String> {
        let mut out = Vec::new();
        for (k, v) in self.entries(section) {
            if k == key {
                if v.is_empty() {
                    out.clear();
                } else {
                    out.extend(v.split_whitespace().map(str::to_owned));
                }
            }
        }
        out
    }

    /// The last value of a single-valued setting.
    pub fn get(&self, section: &str, key: &str) -> Option<&str> {
        self.entries(section)
            .into_iter()
            .rev()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v)
    }

    /// A boolean setting as systemd reads one (`yes`, `true`, `on`, `1`).
    pub fn flag(&self, section: &str, key: &str) -> bool {
        matches!(
            self.get(section, key)
                .map(str::to_ascii_lowercase)
                .as_deref(),
            Some("yes" | "true" | "on" | "1")
        )
    }

    /// The file again, with only the named sections (in the file's order).
    pub fn render(&self, sections: &[&str]) -> String {
        let mut out = String::new();
        for (name, entries) in &self.sections {
            if !sections.contains(&name.as_str()) {
                continue;
            }
            out.push_str(&format!("[{name}]\n"));
            for (k, v) in entries {
                out.push_str(&format!("{k}={v}\n"));
            }
            out.push('\n');
        }
        out
    }
}

/// The path of a program on `PATH`, if it is installed.
pub fn program(name: &str) -> Option<PathBuf> {
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain(["/usr/bin", "/usr/sbin", "/bin", "/sbin"])
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// `systemd-analyze verify` on unit files: `Err` with its output when it
/// fails or says anything at all (it reports unknown keys, sections and
/// values only as warnings, and still exits 0).
pub fn verify(units: &[PathBuf]) -> Result<(), String> {
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(units)
        .env("SYSTEMD_LOG_COLOR", "0")
        .output()
        .map_err(|e| format!("systemd-analyze: {e}"))?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() && said.trim().is_empty() {
        Ok(())
    } else {
        Err(format!(
            "systemd-analyze verify {units:?}: {}\n{said}",
            out.status
        ))
    }
}

/// A copy of `unit` in `dir` (named as the original) with `ExecStart=`'s
/// program `from` replaced by `to`, the binary cargo built: verify checks
/// that the program exists and is executable.
pub fn with_program(unit: &Path, dir: &Path, from: &str, to: &Path) -> PathBuf {
    let text = std::fs::read_to_string(unit).unwrap();
    let exec = format!("ExecStart={from}");
    assert!(
        text.lines()
            .any(|l| l.starts_with(&format!("{exec} ")) || l == exec),
        "{}: no ExecStart={from}",
        unit.display()
    );
    let copy = dir.join(unit.file_name().unwrap());
    std::fs::write(
        &copy,
        text.replace(&exec, &format!("ExecStart={}", to.display())),
    )
    .unwrap();
    copy
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sections_lists_resets_and_continuations() {
        let u = UnitFile::parse(
            "# c\n[Unit]\nDescription=x\n[Service]\nEnvironment=A=1 \\\n  B=2\n; c\nCapabilityBoundingSet=CAP_A\nCapabilityBoundingSet=\nCapabilityBoundingSet=CAP_B CAP_C\nNoNewPrivileges=yes\n",
        )
        .unwrap();
        assert_eq!(u.list("Service", "Environment"), ["A=1", "B=2"]);
        assert_eq!(
            u.list("Service", "CapabilityBoundingSet"),
            ["CAP_B", "CAP_C"]
        );
        assert!(u.flag("Service", "NoNewPrivileges"));
        assert_eq!(u.render(&["Unit"]), "[Unit]\nDescription=x\n\n");
        assert!(UnitFile::parse("Key=1\n").is_err());
        assert!(UnitFile::parse("[Unit\n").is_err());
    }
}
