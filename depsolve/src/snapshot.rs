//! On-disk snapshots of a built [`PackageIndex`], so a cold start from the
//! disk cache costs one file read instead of decompressing and parsing
//! ~100 MB of Packages text. The snapshot is keyed by the SHA-256 of the
//! verified index files it was built from (see `repo.rs`), and every offset
//! in it is range-checked on load, so a damaged file is rebuilt, never
//! trusted.

use std::path::Path;
use std::sync::Arc;

use bytemuck::Pod;

use crate::index::{Family, NameId, PackageIndex, Span, StrRef};

const MAGIC: &[u8; 8] = b"KILNIX02";

fn put(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    out.extend_from_slice(bytes);
}

fn put_pod<T: Pod>(out: &mut Vec<u8>, v: &[T]) {
    put(out, bytemuck::cast_slice(v));
}

/// Serialises an index.
pub fn to_bytes(index: &PackageIndex) -> Vec<u8> {
    let mut out = Vec::with_capacity(index.strings.len() * 3);
    out.extend_from_slice(MAGIC);
    out.push(match index.family {
        Family::Debian => 0,
        Family::Rpm => 1,
    });
    put(&mut out, index.arch.as_bytes());
    put(&mut out, index.repositories.join("\n").as_bytes());
    put(&mut out, index.strings.as_bytes());
    put_pod(&mut out, &index.names);
    put_pod(&mut out, &index.sorted_names);
    put_pod(&mut out, &index.packages);
    put_pod(&mut out, &index.groups);
    put_pod(&mut out, &index.deps);
    put_pod(&mut out, &index.provides);
    put_pod(&mut out, &index.conditionals);
    put_pod(&mut out, &index.version_offsets);
    put_pod(&mut out, &index.version_list);
    put_pod(&mut out, &index.provider_offsets);
    put_pod(&mut out, &index.provider_list);
    put_pod(&mut out, &index.candidates);
    put_pod(&mut out, &index.essential);
    out
}

/// Writes a snapshot through a temporary file and a rename.
pub fn write(index: &PackageIndex, path: &Path) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, to_bytes(index))?;
    std::fs::rename(&tmp, path)
}

/// Reads a snapshot; `None` if it is missing, from another format version
/// or inconsistent (the caller then rebuilds it).
pub fn read(path: &Path) -> Option<Arc<PackageIndex>> {
    let data = std::fs::read(path).ok()?;
    from_bytes(&data).map(Arc::new)
}

struct Cursor<'a> {
    data: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let len_bytes: [u8; 8] = self.data.get(..8)?.try_into().ok()?;
        let len = usize::try_from(u64::from_le_bytes(len_bytes)).ok()?;
        let body = self.data.get(8..8usize.checked_add(len)?)?;
        self.data = &self.data[8 + len..];
        Some(body)
    }
    fn string(&mut self) -> Option<String> {
        String::from_utf8(self.bytes()?.to_vec()).ok()
    }
    fn pod<T: Pod>(&mut self) -> Option<Vec<T>> {
        let b = self.bytes()?;
        if b.len() % std::mem::size_of::<T>() != 0 {
            return None;
        }
        Some(bytemuck::pod_collect_to_vec(b))
    }
}

pub fn from_bytes(data: &[u8]) -> Option<PackageIndex> {
    let rest = data.strip_prefix(MAGIC)?;
    let (&family, rest) = rest.split_first()?;
    let mut c = Cursor { data: rest };
    let family = match family {
        0 => Family::Debian,
        1 => Family::Rpm,
        _ => return None,
    };
    let arch = c.string()?;
    let repos = c.string()?;
    let index = PackageIndex {
        family,
        arch,
        repositories: repos.split('\n').map(String::from).collect(),
        strings: c.string()?,
        names: c.pod()?,
        sorted_names: c.pod()?,
        packages: c.pod()?,
        groups: c.pod()?,
        deps: c.pod()?,
        provides: c.pod()?,
        conditionals: c.pod()?,
        version_offsets: c.pod()?,
        version_list: c.pod()?,
        provider_offsets: c.pod()?,
        provider_list: c.pod()?,
        candidates: c.pod()?,
        essential: c.pod()?,
    };
    (c.data.is_empty() && consistent(&index)).then_some(index)
}

/// Checks every reference so accessors cannot index out of bounds.
fn consistent(ix: &PackageIndex) -> bool {
    let n = ix.names.len();
    let s_ok = |r: StrRef| r.is_none() || ix.strings.get(r.off() as usize..r.end()).is_some();
    let name_ok = |id: NameId| (id.0 as usize) < n;
    let span_ok = |s: Span, len: usize| s.end() <= len;
    let dep_ok =
        |d: &crate::index::Dependency| name_ok(d.name) && d.relation().is_none_or(|(_, v)| s_ok(v));
    let offsets_ok = |o: &[u32], len: usize| {
        o.len() == n + 1
            && o.first() == Some(&0)
            && o.last().map(|&l| l as usize) == Some(len)
            && o.windows(2).all(|w| w[0] <= w[1])
    };
    let np = ix.packages.len();
    ix.names.iter().all(|&r| !r.is_none() && s_ok(r))
        && ix.sorted_names.len() == n
        && ix.sorted_names.iter().all(|&id| name_ok(id))
        && ix.packages.iter().all(|p| {
            name_ok(p.name)
                && (p.repository as usize) < ix.repositories.len()
                && [p.version, p.arch, p.filename, p.sha256]
                    .into_iter()
                    .all(s_ok)
                && [p.pre_depends, p.depends, p.recommends]
                    .iter()
                    .all(|&s| span_ok(s, ix.groups.len()))
                && [p.conflicts, p.breaks, p.obsoletes]
                    .iter()
                    .all(|&s| span_ok(s, ix.deps.len()))
                && span_ok(p.conditional, ix.conditionals.len())
                && span_ok(p.provides, ix.provides.len())
        })
        && ix.groups.iter().all(|&g| span_ok(g, ix.deps.len()))
        && ix.deps.iter().all(dep_ok)
        && ix
            .provides
            .iter()
            .all(|p| name_ok(p.name) && s_ok(p.version))
        && ix
            .conditionals
            .iter()
            .all(|c| dep_ok(&c.when) && span_ok(c.then, ix.deps.len()))
        && offsets_ok(&ix.version_offsets, ix.version_list.len())
        && ix.version_list.iter().all(|&p| (p as usize) < np)
        && offsets_ok(&ix.provider_offsets, ix.provider_list.len())
        && ix.provider_list.iter().all(|&[p, j]| {
            ix.packages
                .get(p as usize)
                .is_some_and(|pkg| j < pkg.provides_len())
        })
        && ix.candidates.len() == n
        && ix
            .candidates
            .iter()
            .all(|&c| c == u32::MAX || (c as usize) < np)
        && ix.essential.iter().all(|&id| name_ok(id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{solve, IndexSource, Request};

    #[test]
    fn round_trip_gives_the_same_solutions_and_damage_is_rejected() {
        let text = "Package: a\nVersion: 1\nArchitecture: amd64\nDepends: b (>= 1) | c, v\nFilename: pool/a.deb\nSize: 5\nSHA256: aa\n\nPackage: b\nVersion: 2\nArchitecture: all\nProvides: v (= 1)\nFilename: pool/b.deb\nSize: 7\nSHA256: bb\n";
        let idx = PackageIndex::build(
            "amd64",
            &[IndexSource {
                base_url: "file:///r".into(),
                label: "P".into(),
                text: text.into(),
            }],
        )
        .unwrap();
        let bytes = to_bytes(&idx);
        let back = from_bytes(&bytes).unwrap();
        let req = Request {
            packages: vec!["a".into()],
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_string(&solve(&idx, &req).unwrap()).unwrap(),
            serde_json::to_string(&solve(&back, &req).unwrap()).unwrap()
        );
        assert_eq!(back.lookup("v"), idx.lookup("v"));
        // Truncated, wrong magic, or an out-of-range offset: rejected.
        assert!(from_bytes(&bytes[..bytes.len() - 3]).is_none());
        let mut bad = bytes.clone();
        bad[0] = b'X';
        assert!(from_bytes(&bad).is_none());
        let mut damaged = from_bytes(&bytes).unwrap();
        damaged.candidates[0] = 7;
        assert!(from_bytes(&to_bytes(&damaged)).is_none());
        let mut damaged = from_bytes(&bytes).unwrap();
        damaged.groups[0] = damaged.packages[0].provides;
        damaged.deps.truncate(1);
        assert!(from_bytes(&to_bytes(&damaged)).is_none());
    }
}
