//! Boot grants: which tenant may publish which images for which nodes to
//! boot (`[[auth.boot_grants]]`). A compose's `boot` targets are checked
//! here when it is submitted, and every boot change asked through the API
//! (publish, rollback, their dry runs, reads of what nodes boot) before it
//! is enqueued; one outside every grant of its tenant is refused (403) and
//! nothing is stored, so no worker ever sees it.

use kiln_api::boot::BootChange;
use kiln_api::compose::{ComposeRequest, UploadTarget};
use kiln_api::error::{ErrorKind, FieldError};
use kiln_api::glob::matches as glob;
use kiln_api::nodes::NodeSelection;

use crate::config::BootGrant;

/// Every `boot` target of `req`, for `tenant`, against `grants`.
pub fn check(req: &ComposeRequest, grants: &[BootGrant], tenant: &str) -> Result<(), FieldError> {
    let mine: Vec<&BootGrant> = grants.iter().filter(|g| g.tenant == tenant).collect();
    for (path, image) in req.images() {
        for (i, target) in image.upload_targets.iter().enumerate() {
            let UploadTarget::Boot(options) = target else {
                continue;
            };
            let at = format!("{path}.upload_targets[{i}]");
            if mine.is_empty() {
                return Err(FieldError::new(
                    ErrorKind::BootNotGranted,
                    format!("{at}.type"),
                    format!("tenant {tenant:?} has no boot grant: boot delivery is off for it"),
                ));
            }
            let at = format!("{at}.upload_options");
            let image = (format!("{at}.image_name"), options.image_name.as_str());
            covered(&mine, Some(image), &options.nodes, &format!("{at}.nodes"))?;
        }
    }
    Ok(())
}

/// A boot change through the API (`POST /boot/changes`), for `tenant`: a
/// publish, canary or promotion needs a grant that covers the image and
/// every node (a canary's and a promotion's: the group), a rollback or a
/// read one that covers every node, a tag one that covers the image.
pub fn check_change(
    change: &BootChange,
    grants: &[BootGrant],
    tenant: &str,
) -> Result<(), FieldError> {
    let mine: Vec<&BootGrant> = grants.iter().filter(|g| g.tenant == tenant).collect();
    if mine.is_empty() {
        return Err(FieldError::new(
            ErrorKind::BootNotGranted,
            "action",
            format!("tenant {tenant:?} has no boot grant: boot delivery is off for it"),
        ));
    }
    let image = change
        .image()
        .map(|image| ("image".to_owned(), image.image_name.as_str()));
    let nodes_at = match change {
        BootChange::Canary { .. } | BootChange::Promote { .. } => "",
        _ => "nodes",
    };
    match change.nodes() {
        Some(nodes) => covered(&mine, image, nodes, nodes_at),
        None => covered_image(&mine, image),
    }
}

/// A change that selects no node (a tag): one grant must cover its image.
fn covered_image(grants: &[&BootGrant], image: Option<(String, &str)>) -> Result<(), FieldError> {
    match image {
        Some((field, name))
            if !grants
                .iter()
                .any(|g| g.image_names.iter().any(|p| glob(p, name))) =>
        {
            Err(FieldError::new(
                ErrorKind::BootNotGranted,
                field,
                format!("image {name:?} is outside the tenant's boot grants"),
            ))
        }
        _ => Ok(()),
    }
}

/// Allowed when one grant covers the image (when there is one: its field
/// and name) and every selected node; the error names the first field no
/// grant covers (`nodes_at` is the selection's own field).
fn covered(
    grants: &[&BootGrant],
    image: Option<(String, &str)>,
    nodes: &NodeSelection,
    nodes_at: &str,
) -> Result<(), FieldError> {
    // A canary's or promotion's group is the request's own `group`.
    let at = |rest: String| {
        if nodes_at.is_empty() {
            rest
        } else {
            format!("{nodes_at}.{rest}")
        }
    };
    let refuse = |field: String, what: String| {
        Err(FieldError::new(
            ErrorKind::BootNotGranted,
            field,
            format!("{what} is outside the tenant's boot grants"),
        ))
    };
    let images: Vec<&BootGrant> = match &image {
        None => grants.to_vec(),
        Some((_, name)) => grants
            .iter()
            .copied()
            .filter(|g| g.image_names.iter().any(|p| glob(p, name)))
            .collect(),
    };
    if let (true, Some((field, name))) = (images.is_empty(), &image) {
        return refuse(field.clone(), format!("image {name:?}"));
    }
    // The first node (in order) that no grant naming the image covers.
    let uncovered = |covers: &dyn Fn(&BootGrant, usize) -> bool, n: usize| {
        (0..n).find(|&k| !images.iter().any(|g| covers(g, k)))
    };
    match nodes {
        NodeSelection::Group(group) => {
            if !images
                .iter()
                .any(|g| g.groups.iter().any(|p| glob(p, group)))
            {
                return refuse(at("group".to_owned()), format!("group {group:?}"));
            }
        }
        NodeSelection::Xnames(xs) => {
            let covers = |g: &BootGrant, k: usize| g.xnames.iter().any(|p| glob(p, xs[k].as_str()));
            if let Some(k) = uncovered(&covers, xs.len()) {
                return refuse(at(format!("xnames[{k}]")), format!("node {}", xs[k]));
            }
        }
        NodeSelection::Macs(ms) => {
            let covers = |g: &BootGrant, k: usize| {
                g.macs
                    .iter()
                    .any(|p| glob(&p.to_ascii_lowercase(), ms[k].as_str()))
            };
            if let Some(k) = uncovered(&covers, ms.len()) {
                return refuse(at(format!("macs[{k}]")), format!("MAC {}", ms[k]));
            }
        }
        NodeSelection::Nids(ns) => {
            let covers = |g: &BootGrant, k: usize| g.nids.iter().any(|r| in_range(r, ns[k]));
            if let Some(k) = uncovered(&covers, ns.len()) {
                return refuse(at(format!("nids[{k}]")), format!("NID {}", ns[k]));
            }
        }
    }
    Ok(())
}

/// `range` (`"7"` or `"1-100"`) holds `nid`.
fn in_range(range: &str, nid: u32) -> bool {
    let parse = |s: &str| s.trim().parse::<u32>().ok();
    match range.split_once('-') {
        Some((a, b)) => matches!((parse(a), parse(b)), (Some(a), Some(b)) if a <= nid && nid <= b),
        None => parse(range) == Some(nid),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn grant() -> BootGrant {
        BootGrant {
            tenant: "tenant-a".into(),
            image_names: vec!["compute*".into()],
            groups: vec!["compute".into()],
            xnames: vec!["x1000c0s*b0n*".into()],
            macs: vec!["02:00:00:00:00:*".into()],
            nids: vec!["1-8".into(), "42".into()],
        }
    }

    fn request(target: serde_json::Value) -> ComposeRequest {
        serde_json::from_value(json!({
            "distribution": "debian-12",
            "image_request": {"architecture": "x86_64", "image_type": "pxe",
                "upload_targets": [{"type": "local", "upload_options": {}}, target]}
        }))
        .expect("request")
    }

    fn boot(image: &str, nodes: serde_json::Value) -> serde_json::Value {
        json!({"type": "boot", "upload_options": {"image_name": image, "nodes": nodes}})
    }

    #[test]
    fn grants_cover_images_and_nodes() {
        let grants = [grant()];
        let at = "image_request.upload_targets[1]";
        for nodes in [
            json!({"group": "compute"}),
            json!({"xnames": ["x1000c0s0b0n0", "x1000c0s7b0n1"]}),
            json!({"macs": ["02:00:00:00:00:01", "02-00-00-00-00-0A"]}),
            json!({"nids": [1, 8, 42]}),
        ] {
            let req = request(boot("compute-v2", nodes.clone()));
            assert!(check(&req, &grants, "tenant-a").is_ok(), "{nodes}");
        }
        for (target, tenant, field) in [
            (
                boot("compute", json!({"group": "compute"})),
                "tenant-b",
                format!("{at}.type"),
            ),
            (
                boot("login", json!({"group": "compute"})),
                "tenant-a",
                format!("{at}.upload_options.image_name"),
            ),
            (
                boot("compute", json!({"group": "admin"})),
                "tenant-a",
                format!("{at}.upload_options.nodes.group"),
            ),
            (
                boot(
                    "compute",
                    json!({"xnames": ["x1000c0s0b0n0", "x1000c1s0b0n0"]}),
                ),
                "tenant-a",
                format!("{at}.upload_options.nodes.xnames[1]"),
            ),
            (
                boot("compute", json!({"macs": ["02:00:00:00:01:01"]})),
                "tenant-a",
                format!("{at}.upload_options.nodes.macs[0]"),
            ),
            (
                boot("compute", json!({"nids": [8, 9]})),
                "tenant-a",
                format!("{at}.upload_options.nodes.nids[1]"),
            ),
        ] {
            let err = check(&request(target.clone()), &grants, tenant).expect_err("outside");
            assert_eq!(err.kind, ErrorKind::BootNotGranted, "{target}");
            assert_eq!(err.field, field, "{target}");
        }
        // Without any grant there is no boot delivery at all.
        assert!(check(
            &request(boot("compute", json!({"group": "compute"}))),
            &[],
            "tenant-a"
        )
        .is_err());
    }

    #[test]
    fn api_changes_need_a_grant_for_their_nodes_and_image() {
        let grants = [grant()];
        let change = |v: serde_json::Value| {
            serde_json::from_value::<kiln_api::boot::BootChangeRequest>(v)
                .unwrap()
                .check()
                .unwrap()
        };
        let ok = [
            json!({"action": "publish", "image": "compute-a/v1/x86_64", "nodes": {"group": "compute"}}),
            json!({"action": "rollback", "nodes": {"xnames": ["x1000c0s3b0n1"]}}),
            json!({"action": "show", "nodes": {"nids": [2, 42]}}),
        ];
        for v in ok {
            assert!(
                check_change(&change(v.clone()), &grants, "tenant-a").is_ok(),
                "{v}"
            );
        }
        for (v, tenant, field) in [
            (
                json!({"action": "publish", "image": "login/v1/x86_64", "nodes": {"group": "compute"}}),
                "tenant-a",
                "image",
            ),
            (
                json!({"action": "rollback", "nodes": {"xnames": ["x1000c0s3b0n1", "x2000c0s0b0n0"]}}),
                "tenant-a",
                "nodes.xnames[1]",
            ),
            (
                json!({"action": "show", "nodes": {"group": "admin"}}),
                "tenant-a",
                "nodes.group",
            ),
            (
                json!({"action": "show", "nodes": {"group": "compute"}}),
                "tenant-b",
                "action",
            ),
        ] {
            let e = check_change(&change(v.clone()), &grants, tenant).expect_err("outside");
            assert_eq!(
                (e.kind, e.field.as_str()),
                (ErrorKind::BootNotGranted, field),
                "{v}"
            );
        }
    }

    #[test]
    fn globs() {
        for (p, s, m) in [
            ("a*", "abc", true),
            ("*c", "abc", true),
            ("a*c", "ac", true),
            ("a*b*c", "axbyc", true),
            ("abc", "abc", true),
            ("abc", "abcd", false),
            ("a*c", "ab", false),
            ("*", "", true),
            ("x*n*", "x1000c0s0b0", false),
        ] {
            assert_eq!(glob(p, s), m, "{p} {s}");
        }
        assert!(
            in_range("1-8", 8) && !in_range("1-8", 9) && in_range("42", 42) && !in_range("x", 1)
        );
    }
}
