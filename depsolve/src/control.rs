//! Parser for Debian control files (`Packages` indexes, deb822 stanzas).
//!
//! Only the fields the solver and the manifest need are kept, as slices of
//! the input; interning happens afterwards in one ordered pass
//! (see [`crate::index`]). Parsing of big indexes is split into chunks at
//! stanza boundaries and run on rayon.

use rayon::prelude::*;

/// One stanza, borrowed from the index text.
#[derive(Debug, Default, Clone)]
pub(crate) struct Stanza<'a> {
    pub package: &'a str,
    pub version: &'a str,
    pub architecture: &'a str,
    pub multi_arch: &'a str,
    pub essential: bool,
    pub important: bool,
    pub priority: &'a str,
    pub pre_depends: &'a str,
    pub depends: &'a str,
    pub recommends: &'a str,
    pub suggests: &'a str,
    pub conflicts: &'a str,
    pub breaks: &'a str,
    pub replaces: &'a str,
    pub enhances: &'a str,
    pub provides: &'a str,
    pub filename: &'a str,
    pub size: &'a str,
    pub sha256: &'a str,
}

/// Parses every stanza of `text`, in order. Stanzas without `Package` are
/// skipped (they cannot be installed); the caller validates the rest.
pub(crate) fn parse_stanzas(text: &str) -> Vec<Stanza<'_>> {
    // Below ~4 MiB a single thread is faster than the split.
    const CHUNK: usize = 4 << 20;
    if text.len() < CHUNK {
        return parse_chunk(text);
    }
    let mut chunks = Vec::new();
    let mut start = 0;
    while start < text.len() {
        let mut end = (start + CHUNK).min(text.len());
        if end < text.len() {
            end = match text[end..].find("\n\n") {
                Some(i) => end + i + 2,
                None => text.len(),
            };
        }
        chunks.push(&text[start..end]);
        start = end;
    }
    let parts: Vec<Vec<Stanza<'_>>> = chunks.par_iter().map(|c| parse_chunk(c)).collect();
    parts.into_iter().flatten().collect()
}

fn parse_chunk(text: &str) -> Vec<Stanza<'_>> {
    let mut out = Vec::with_capacity(text.len() / 1500);
    let mut cur = Stanza::default();
    let mut in_stanza = false;
    let bytes = text.as_bytes();
    let mut pos = 0;
    while pos < bytes.len() {
        let line_end = memchr_nl(bytes, pos);
        let line = &text[pos..line_end];
        let next = (line_end + 1).min(bytes.len());
        if line.trim_end().is_empty() {
            if in_stanza && !cur.package.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            cur = Stanza::default();
            in_stanza = false;
            pos = next;
            continue;
        }
        in_stanza = true;
        if line.starts_with(' ') || line.starts_with('\t') {
            // Continuation of a field we do not keep (or already extended below).
            pos = next;
            continue;
        }
        let Some(colon) = line.find(':') else {
            pos = next;
            continue;
        };
        let key = &line[..colon];
        // A value may continue on following lines that start with
        // whitespace; keep the whole span so folded Depends still parse.
        let mut end = line_end;
        let mut scan = next;
        while scan < bytes.len() && (bytes[scan] == b' ' || bytes[scan] == b'\t') {
            let e = memchr_nl(bytes, scan);
            if text[scan..e].trim().is_empty() {
                break;
            }
            end = e;
            scan = (e + 1).min(bytes.len());
        }
        let value = text[pos + colon + 1..end].trim();
        match key {
            "Package" => cur.package = value,
            "Version" => cur.version = value,
            "Architecture" => cur.architecture = value,
            "Multi-Arch" => cur.multi_arch = value,
            "Essential" => cur.essential = value.eq_ignore_ascii_case("yes"),
            "Important" | "Protected" => cur.important |= value.eq_ignore_ascii_case("yes"),
            "Priority" => cur.priority = value,
            "Pre-Depends" => cur.pre_depends = value,
            "Depends" => cur.depends = value,
            "Recommends" => cur.recommends = value,
            "Suggests" => cur.suggests = value,
            "Conflicts" => cur.conflicts = value,
            "Breaks" => cur.breaks = value,
            "Replaces" => cur.replaces = value,
            "Enhances" => cur.enhances = value,
            "Provides" => cur.provides = value,
            "Filename" => cur.filename = value,
            "Size" => cur.size = value,
            "SHA256" => cur.sha256 = value,
            _ => {}
        }
        pos = scan;
    }
    if in_stanza && !cur.package.is_empty() {
        out.push(cur);
    }
    out
}

fn memchr_nl(bytes: &[u8], from: usize) -> usize {
    bytes[from..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(bytes.len(), |i| from + i)
}

/// A version relation as written in a dependency field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Relation {
    /// `<<`
    Less,
    /// `<=` (and the obsolete `<`)
    LessEq,
    /// `=`
    Eq,
    /// `>=` (and the obsolete `>`)
    GreaterEq,
    /// `>>`
    Greater,
}

impl Relation {
    pub fn as_str(self) -> &'static str {
        match self {
            Relation::Less => "<<",
            Relation::LessEq => "<=",
            Relation::Eq => "=",
            Relation::GreaterEq => ">=",
            Relation::Greater => ">>",
        }
    }

    /// The same relation in RPM's notation.
    pub fn as_rpm_str(self) -> &'static str {
        match self {
            Relation::Less => "<",
            Relation::LessEq => "<=",
            Relation::Eq => "=",
            Relation::GreaterEq => ">=",
            Relation::Greater => ">",
        }
    }

    /// Whether `ordering` (candidate compared to the wanted version) satisfies it.
    pub fn accepts(self, ordering: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering::*;
        match self {
            Relation::Less => ordering == Less,
            Relation::LessEq => ordering != Greater,
            Relation::Eq => ordering == Equal,
            Relation::GreaterEq => ordering != Less,
            Relation::Greater => ordering == Greater,
        }
    }
}

/// One term of a dependency field, borrowed from the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawDep<'a> {
    pub name: &'a str,
    pub arch: Option<&'a str>,
    pub constraint: Option<(Relation, &'a str)>,
}

/// Error in a dependency field; the caller adds the package and field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DepSyntaxError(pub String);

/// Parses `a (>= 1) | b:any, c` into groups of alternatives.
#[cfg(test)]
pub(crate) fn parse_relations(field: &str) -> Result<Vec<Vec<RawDep<'_>>>, DepSyntaxError> {
    let mut groups = Vec::new();
    for group in field.split(',') {
        if group.trim().is_empty() {
            continue;
        }
        let mut alts = Vec::with_capacity(1);
        for term in group.split('|') {
            alts.push(parse_term(term)?);
        }
        groups.push(alts);
    }
    Ok(groups)
}

pub(crate) fn parse_term(term: &str) -> Result<RawDep<'_>, DepSyntaxError> {
    let term = term.trim();
    // Architecture restrictions `[...]` and build profiles `<...>` do not
    // appear in binary indexes; drop them if present.
    let cut = term.find(['[', '<']).filter(|&i| {
        let before = term[..i].trim_end();
        !before.ends_with('(') && !term[..i].contains('(')
    });
    let term = match cut {
        Some(i) => term[..i].trim(),
        None => term,
    };
    let (head, constraint) = match term.find('(') {
        Some(open) => {
            let close = term[open..]
                .find(')')
                .map(|c| open + c)
                .ok_or_else(|| DepSyntaxError(format!("unclosed '(' in '{term}'")))?;
            let inner = term[open + 1..close].trim();
            let op_len = inner
                .find(|c: char| !matches!(c, '<' | '>' | '='))
                .unwrap_or(inner.len());
            let (op, ver) = (&inner[..op_len], inner[op_len..].trim());
            let rel = match op {
                "<<" => Relation::Less,
                "<=" | "<" => Relation::LessEq,
                "=" => Relation::Eq,
                ">=" | ">" => Relation::GreaterEq,
                ">>" => Relation::Greater,
                _ => {
                    return Err(DepSyntaxError(format!(
                        "unknown relation '{op}' in '{term}'"
                    )))
                }
            };
            if ver.is_empty() {
                return Err(DepSyntaxError(format!("missing version in '{term}'")));
            }
            (term[..open].trim(), Some((rel, ver)))
        }
        None => (term, None),
    };
    if head.is_empty() {
        return Err(DepSyntaxError(format!("missing package name in '{term}'")));
    }
    let (name, arch) = match head.split_once(':') {
        Some((n, a)) => (n, Some(a)),
        None => (head, None),
    };
    Ok(RawDep {
        name,
        arch,
        constraint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stanzas_with_continuations() {
        let text = "Package: a\nVersion: 1.0\nArchitecture: amd64\nDepends: b (>= 2),\n c | d:any\nDescription: x\n more\n\nPackage: b\nVersion: 2\nEssential: yes\nProtected: yes\n";
        let s = parse_stanzas(text);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].package, "a");
        let deps = parse_relations(s[0].depends).unwrap();
        assert_eq!(deps.len(), 2);
        assert_eq!(deps[0][0].constraint, Some((Relation::GreaterEq, "2")));
        assert_eq!(deps[1][1].name, "d");
        assert_eq!(deps[1][1].arch, Some("any"));
        assert!(s[1].essential && s[1].important);
    }

    #[test]
    fn parses_relations() {
        let d = parse_relations("libc6 (>= 2.34), x (<< 3~) | y (= 1:2-3), z (>4)").unwrap();
        assert_eq!(d[1][0].constraint, Some((Relation::Less, "3~")));
        assert_eq!(d[1][1].constraint, Some((Relation::Eq, "1:2-3")));
        assert_eq!(d[2][0].constraint, Some((Relation::GreaterEq, "4")));
        assert!(parse_relations("a (>= )").is_err());
        assert!(parse_relations("a (~~ 1)").is_err());
        assert!(parse_relations("a (>= 1").is_err());
        let r = parse_relations("foo [amd64] <!nocheck>").unwrap();
        assert_eq!(r[0][0].name, "foo");
    }

    #[test]
    fn relation_accepts() {
        use std::cmp::Ordering::*;
        assert!(Relation::Less.accepts(Less) && !Relation::Less.accepts(Equal));
        assert!(Relation::GreaterEq.accepts(Equal) && !Relation::GreaterEq.accepts(Less));
        assert!(Relation::Eq.accepts(Equal) && !Relation::Eq.accepts(Greater));
    }

    #[test]
    fn big_input_is_split_without_losing_stanzas() {
        let mut text = String::new();
        for i in 0..40_000 {
            text.push_str(&format!(
                "Package: p{i}\nVersion: 1\nArchitecture: all\nDescription: padding padding padding padding padding padding padding\n padding padding padding padding padding padding\n\n"
            ));
        }
        assert!(text.len() > 4 << 20);
        let s = parse_stanzas(&text);
        assert_eq!(s.len(), 40_000);
        assert_eq!(s[39_999].package, "p39999");
    }
}
