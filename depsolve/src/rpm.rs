//! RPM repositories: `repomd.xml` and `primary.xml`, turned into the same
//! [`PackageIndex`] model as Debian indexes. Rich dependencies are
//! supported for `and`, `or` and `if` (`A if B` becomes a conditional).

use std::sync::Arc;

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

use crate::builder::Builder;
use crate::control::Relation;
use crate::error::DepsolveError;
use crate::index::{
    ArchQualifier, Dependency, Family, MultiArch, NewPackage, PackageIndex, Provide, Span, StrRef,
};
use crate::rpm_rich::{lower, parse_rich, tokenize};
use crate::rpmversion::format_evr;

/// RPM's name for a Debian architecture (`amd64` -> `x86_64`).
pub fn rpm_arch(arch: &str) -> &str {
    match arch {
        "amd64" => "x86_64",
        "arm64" => "aarch64",
        "i386" => "i686",
        "ppc64el" => "ppc64le",
        other => other,
    }
}

/// Location and checksum of `primary.xml` as listed in `repomd.xml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrimaryRef {
    pub href: String,
    pub sha256: String,
    pub size: Option<u64>,
}

fn xml_err(file: &str, e: impl std::fmt::Display) -> DepsolveError {
    DepsolveError::BadRelease {
        file: file.to_string(),
        detail: format!("XML: {e}"),
    }
}

fn attr(e: &BytesStart<'_>, name: &str) -> Option<String> {
    e.try_get_attribute(name)
        .ok()
        .flatten()
        .and_then(|a| a.unescape_value().ok().map(|v| v.into_owned()))
}

/// Reads the primary entry of `repomd.xml`.
pub fn parse_repomd(file: &str, xml: &str) -> Result<PrimaryRef, DepsolveError> {
    let mut reader = Reader::from_str(xml);
    reader.config_mut().trim_text(true);
    let (mut in_primary, mut in_checksum) = (false, false);
    let (mut href, mut sha, mut size, mut in_size) = (None, None, None, false);
    let mut checksum_type = String::new();
    loop {
        match reader.read_event().map_err(|e| xml_err(file, e))? {
            Event::Start(e) | Event::Empty(e) if e.name().as_ref() == b"data" => {
                in_primary = attr(&e, "type").as_deref() == Some("primary");
            }
            Event::Start(e) if in_primary && e.name().as_ref() == b"checksum" => {
                in_checksum = true;
                checksum_type = attr(&e, "type").unwrap_or_default();
            }
            Event::Start(e) if in_primary && e.name().as_ref() == b"size" => in_size = true,
            Event::Start(e) | Event::Empty(e) if in_primary && e.name().as_ref() == b"location" => {
                href = attr(&e, "href");
            }
            Event::Text(t) if in_checksum || in_size => {
                let text = t
                    .unescape()
                    .map_err(|e| xml_err(file, e))?
                    .trim()
                    .to_string();
                if in_checksum {
                    sha = Some(text);
                } else {
                    size = text.parse().ok();
                }
            }
            Event::End(e) => match e.name().as_ref() {
                b"checksum" => in_checksum = false,
                b"size" => in_size = false,
                b"data" => in_primary = false,
                _ => {}
            },
            Event::Eof => break,
            _ => {}
        }
    }
    let bad = |detail: &str| DepsolveError::BadRelease {
        file: file.to_string(),
        detail: detail.to_string(),
    };
    if !checksum_type.is_empty() && checksum_type != "sha256" {
        return Err(bad(&format!(
            "primary checksum is {checksum_type}, only sha256 is accepted"
        )));
    }
    Ok(PrimaryRef {
        href: href.ok_or_else(|| bad("no primary location"))?,
        sha256: sha
            .ok_or_else(|| bad("no primary checksum"))?
            .to_ascii_lowercase(),
        size,
    })
}

/// A dependency entry (`<rpm:entry name flags epoch ver rel/>`).
#[derive(Debug, Default, Clone)]
struct Entry {
    name: String,
    flags: Option<String>,
    epoch: Option<String>,
    ver: Option<String>,
    rel: Option<String>,
}

#[derive(Debug, Default)]
struct RawRpm {
    name: String,
    arch: String,
    epoch: Option<String>,
    ver: String,
    rel: Option<String>,
    sha256: String,
    size: u64,
    href: String,
    provides: Vec<Entry>,
    requires: Vec<Entry>,
    conflicts: Vec<Entry>,
    obsoletes: Vec<Entry>,
    recommends: Vec<Entry>,
    files: Vec<String>,
}

fn parse_primary(file: &str, xml: &str) -> Result<Vec<RawRpm>, DepsolveError> {
    let mut reader = Reader::from_str(xml);
    reader.config_mut().trim_text(true);
    let mut out = Vec::new();
    let mut cur: Option<RawRpm> = None;
    let mut text_target: Option<&'static str> = None;
    let mut list: Option<&'static str> = None;
    let mut checksum_is_sha256 = false;
    loop {
        let ev = reader.read_event().map_err(|e| xml_err(file, e))?;
        match ev {
            Event::Start(e) | Event::Empty(e) => {
                let name = e.name();
                let Some(p) = cur.as_mut() else {
                    if name.as_ref() == b"package" {
                        cur = Some(RawRpm::default());
                    }
                    continue;
                };
                match name.as_ref() {
                    b"name" => text_target = Some("name"),
                    b"arch" => text_target = Some("arch"),
                    b"file" => text_target = Some("file"),
                    b"checksum" => {
                        checksum_is_sha256 = attr(&e, "type").as_deref() == Some("sha256");
                        text_target = Some("checksum");
                    }
                    b"version" => {
                        p.epoch = attr(&e, "epoch");
                        p.ver = attr(&e, "ver").unwrap_or_default();
                        p.rel = attr(&e, "rel");
                    }
                    b"size" => {
                        p.size = attr(&e, "package")
                            .and_then(|s| s.parse().ok())
                            .unwrap_or(0)
                    }
                    b"location" => p.href = attr(&e, "href").unwrap_or_default(),
                    b"rpm:provides" => list = Some("provides"),
                    b"rpm:requires" => list = Some("requires"),
                    b"rpm:conflicts" => list = Some("conflicts"),
                    b"rpm:obsoletes" => list = Some("obsoletes"),
                    b"rpm:recommends" => list = Some("recommends"),
                    b"rpm:entry" => {
                        let entry = Entry {
                            name: attr(&e, "name").unwrap_or_default(),
                            flags: attr(&e, "flags"),
                            epoch: attr(&e, "epoch"),
                            ver: attr(&e, "ver"),
                            rel: attr(&e, "rel"),
                        };
                        match list {
                            Some("provides") => p.provides.push(entry),
                            Some("requires") => p.requires.push(entry),
                            Some("conflicts") => p.conflicts.push(entry),
                            Some("obsoletes") => p.obsoletes.push(entry),
                            Some("recommends") => p.recommends.push(entry),
                            _ => {}
                        }
                    }
                    _ => {}
                }
            }
            Event::Text(t) => {
                if let (Some(target), Some(p)) = (text_target, cur.as_mut()) {
                    let v = t.unescape().map_err(|e| xml_err(file, e))?.into_owned();
                    match target {
                        "name" => p.name = v,
                        "arch" => p.arch = v,
                        "file" => p.files.push(v),
                        "checksum" if checksum_is_sha256 => p.sha256 = v.to_ascii_lowercase(),
                        _ => {}
                    }
                }
            }
            Event::End(e) => {
                text_target = None;
                match e.name().as_ref() {
                    b"package" => out.extend(cur.take()),
                    b"rpm:provides" | b"rpm:requires" | b"rpm:conflicts" | b"rpm:obsoletes"
                    | b"rpm:recommends" => list = None,
                    _ => {}
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(out)
}

/// One parsed `primary.xml` and the repository URL its hrefs are under.
pub struct RpmSource {
    pub base_url: String,
    pub label: String,
    pub xml: String,
}

/// Builds an index from primary.xml files (arch: Debian or RPM name).
pub fn build_index(arch: &str, sources: &[RpmSource]) -> Result<Arc<PackageIndex>, DepsolveError> {
    let arch = rpm_arch(arch);
    let mut b = Builder::new(arch);
    for (repo, src) in sources.iter().enumerate() {
        for raw in parse_primary(&src.label, &src.xml)? {
            let name = b.intern(&raw.name);
            if raw.arch != arch && raw.arch != "noarch" {
                continue;
            }
            convert(&mut b, name, &raw, repo as u32).map_err(|detail| DepsolveError::BadIndex {
                file: src.label.clone(),
                package: raw.name.clone(),
                detail,
            })?;
        }
    }
    let repos = sources.iter().map(|s| s.base_url.clone()).collect();
    Ok(b.finish(Family::Rpm, repos))
}

fn relation(flags: &str) -> Result<Relation, String> {
    Ok(match flags {
        "EQ" => Relation::Eq,
        "LT" => Relation::Less,
        "LE" => Relation::LessEq,
        "GT" => Relation::Greater,
        "GE" => Relation::GreaterEq,
        other => return Err(format!("unknown flags '{other}'")),
    })
}

pub(crate) fn atom(
    b: &mut Builder,
    name: &str,
    flags: Option<&str>,
    evr: Option<String>,
) -> Result<Dependency, String> {
    let constraint = match (flags, evr) {
        (Some(f), Some(v)) => Some((relation(f)?, b.string(&v))),
        _ => None,
    };
    let name = b.intern(name);
    Ok(Dependency::new(name, ArchQualifier::Native, constraint))
}

fn entry_evr(e: &Entry) -> Option<String> {
    e.ver
        .as_deref()
        .map(|v| format_evr(e.epoch.as_deref(), v, e.rel.as_deref()))
}

pub(crate) type Groups = Vec<Vec<Dependency>>;
pub(crate) type Conditionals = Vec<(Dependency, Vec<Dependency>)>;

fn convert(
    b: &mut Builder,
    name: crate::index::NameId,
    raw: &RawRpm,
    repo: u32,
) -> Result<(), String> {
    if raw.ver.is_empty() {
        return Err("missing version".into());
    }
    let mut depends: Groups = Vec::new();
    let mut conditional = Vec::new();
    for e in &raw.requires {
        // rpmlib() capabilities are provided by rpm itself.
        if e.name.starts_with("rpmlib(") {
            continue;
        }
        add_requirement(b, e, &mut depends, &mut conditional)?;
    }
    let mut recommends: Groups = Vec::new();
    let mut rec_cond = Vec::new();
    for e in &raw.recommends {
        add_requirement(b, e, &mut recommends, &mut rec_cond)?;
    }
    let flat = |b: &mut Builder, list: &[Entry]| -> Result<Vec<Dependency>, String> {
        list.iter()
            .map(|e| atom(b, &e.name, e.flags.as_deref(), entry_evr(e)))
            .collect()
    };
    let conflicts = flat(b, &raw.conflicts)?;
    let obsoletes = flat(b, &raw.obsoletes)?;
    let mut provides = Vec::with_capacity(raw.provides.len() + raw.files.len());
    for e in &raw.provides {
        let name = b.intern(&e.name);
        let version = match (e.flags.as_deref(), entry_evr(e)) {
            (Some("EQ"), Some(v)) => b.string(&v),
            _ => StrRef::NONE,
        };
        provides.push(Provide { name, version });
    }
    for f in &raw.files {
        let name = b.intern(f);
        provides.push(Provide {
            name,
            version: StrRef::NONE,
        });
    }
    let version = format_evr(raw.epoch.as_deref(), &raw.ver, raw.rel.as_deref());
    if b.is_duplicate(name, &version) {
        return Ok(());
    }
    let depends = b.groups(depends);
    let recommends = b.groups(recommends);
    let conflicts = b.deps(conflicts);
    let obsoletes = b.deps(obsoletes);
    let conditional = b.conditionals(conditional);
    let provides = b.provides(provides);
    b.push(
        NewPackage {
            name,
            version: &version,
            arch: &raw.arch,
            filename: &raw.href,
            sha256: &raw.sha256,
            size: raw.size,
            essential: false,
            important: false,
            priority: 0,
            multi_arch: MultiArch::No,
            repository: repo,
        },
        [
            Span::default(),
            depends,
            recommends,
            conflicts,
            Span::default(),
            obsoletes,
            conditional,
            provides,
        ],
    );
    Ok(())
}

fn add_requirement(
    b: &mut Builder,
    e: &Entry,
    groups: &mut Groups,
    conditional: &mut Conditionals,
) -> Result<(), String> {
    if !e.name.starts_with('(') {
        groups.push(vec![atom(b, &e.name, e.flags.as_deref(), entry_evr(e))?]);
        return Ok(());
    }
    let tokens = tokenize(&e.name);
    let mut pos = 0;
    let expr = parse_rich(&tokens, &mut pos)
        .ok_or_else(|| format!("cannot parse rich dependency '{}'", e.name))?;
    if pos != tokens.len() {
        return Err(format!("trailing text in rich dependency '{}'", e.name));
    }
    let (mut g, mut c) = (Vec::new(), Vec::new());
    if lower(b, &expr, &mut g, &mut c).is_ok() {
        groups.extend(g);
        conditional.extend(c);
    } else {
        // `with`, `unless`, `else`...: kept as a requirement nothing
        // provides, so only packages that need it fail, with its text.
        groups.push(vec![atom(b, &e.name, None, None)?]);
    }
    Ok(())
}

/// An index of one repository at `file:///r` whose primary.xml is `xml`.
#[cfg(test)]
fn one_repo(xml: String) -> Arc<PackageIndex> {
    let source = RpmSource {
        base_url: "file:///r".into(),
        label: "primary.xml".into(),
        xml,
    };
    build_index("amd64", &[source]).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRIMARY: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<metadata xmlns="http://linux.duke.edu/metadata/common" xmlns:rpm="http://linux.duke.edu/metadata/rpm" packages="2">
<package type="rpm"><name>alpha</name><arch>noarch</arch><version epoch="0" ver="1.0" rel="1"/>
<checksum type="sha256" pkgid="YES">ABCD</checksum><size package="10" installed="3" archive="256"/>
<location href="alpha-1.0-1.noarch.rpm"/><format>
<rpm:provides><rpm:entry name="alpha" flags="EQ" epoch="0" ver="1.0" rel="1"/></rpm:provides>
<rpm:requires><rpm:entry name="(epsilon if zeta)"/><rpm:entry name="(gamma or (delta and eta))"/>
<rpm:entry name="((gamma or delta) and beta &gt;= 2)"/><rpm:entry name="rpmlib(CompressedFileNames)" flags="LE" epoch="0" ver="3.0.4" rel="1"/></rpm:requires>
<rpm:obsoletes><rpm:entry name="old" flags="LT" epoch="0" ver="1.0"/></rpm:obsoletes>
<file>/usr/bin/alpha</file></format></package>
</metadata>"#;

    #[test]
    fn parses_repomd_primary_entry() {
        let xml = r#"<repomd><data type="other"><location href="o.xml.gz"/></data><data type="primary"><checksum type="sha256">AB12</checksum><location href="repodata/p-primary.xml.zst"/><size>42</size></data></repomd>"#;
        let r = parse_repomd("repomd.xml", xml).unwrap();
        assert_eq!(r.href, "repodata/p-primary.xml.zst");
        assert_eq!(r.sha256, "ab12");
        assert_eq!(r.size, Some(42));
    }

    #[test]
    fn unsupported_rich_dependency_stays_unsatisfiable() {
        let xml = PRIMARY.replace("(gamma or (delta and eta))", "(gamma with delta)");
        let idx = one_repo(xml);
        let p = idx.package(0);
        assert!(idx
            .groups(p.depends)
            .any(|g| idx.group_string(g) == "(gamma with delta)"));
        let req = crate::Request {
            packages: vec!["alpha".into()],
            ..Default::default()
        };
        let err = crate::solve(&idx, &req).unwrap_err().to_string();
        assert!(err.contains("(gamma with delta) is not available"), "{err}");
    }

    #[test]
    fn lowers_rich_dependencies() {
        let idx = one_repo(PRIMARY.replace("(gamma or (delta and eta))", "(gamma or delta)"));
        let p = idx.package(0);
        assert_eq!(idx.version(p), "1.0-1");
        assert_eq!(idx.arch(), "x86_64");
        let groups: Vec<String> = idx.groups(p.depends).map(|g| idx.group_string(g)).collect();
        assert_eq!(groups, ["gamma | delta", "gamma | delta", "beta (>= 2)"]);
        assert_eq!(idx.conditionals_of(p).len(), 1);
        assert_eq!(idx.name(idx.conditionals_of(p)[0].when.name), "zeta");
        assert_eq!(idx.dep_string(&idx.deps(p.obsoletes)[0]), "old (< 1.0)");
        assert!(idx.lookup("/usr/bin/alpha").is_some());
    }
}

#[cfg(test)]
mod solve_tests {
    use super::*;
    use crate::{solve, Request};

    fn pkg(name: &str, requires: &[&str]) -> String {
        let req: String = requires
            .iter()
            .map(|r| format!("<rpm:entry name=\"{}\"/>", r.replace('>', "&gt;")))
            .collect();
        format!(
            "<package type=\"rpm\"><name>{name}</name><arch>noarch</arch><version epoch=\"0\" ver=\"1\" rel=\"1\"/><checksum type=\"sha256\" pkgid=\"YES\">00</checksum><size package=\"1\"/><location href=\"{name}.rpm\"/><format><rpm:provides><rpm:entry name=\"{name}\" flags=\"EQ\" epoch=\"0\" ver=\"1\" rel=\"1\"/></rpm:provides><rpm:requires>{req}</rpm:requires></format></package>"
        )
    }

    fn names(packages: &[String], request: &[&str]) -> Vec<String> {
        let xml = format!("<metadata>{}</metadata>", packages.concat());
        let idx = one_repo(xml);
        let req = Request {
            packages: request.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        solve(&idx, &req)
            .unwrap()
            .packages
            .into_iter()
            .map(|p| p.name)
            .collect()
    }

    #[test]
    fn conditional_applies_when_its_condition_arrives_later() {
        let repo = [
            pkg("a", &["(x if y)"]),
            pkg("b", &["y"]),
            pkg("x", &[]),
            pkg("y", &[]),
        ];
        assert_eq!(names(&repo, &["a"]), ["a"]);
        // a is handled before b pulls in y; x must still follow.
        assert_eq!(names(&repo, &["a", "b"]), ["a", "b", "x", "y"]);
    }
}
