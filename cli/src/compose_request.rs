//! Building a compose request from `kiln compose start`'s flags.
//!
//! The flags cover one image; anything more (several images, repository
//! keys, Cloud API customizations) is a `--request` file. The composer
//! validates the request: what is checked here is only what the flags'
//! own syntax needs.

use serde_json::{json, Map, Value};

use kiln_api::compose::{ComposeRequest, ImageRequest, Repository, UploadTarget, UPLOAD_TYPES};
use kiln_api::customizations::Blueprint;
use kiln_api::error::FieldError;

/// `--target TYPE[:REGION][,KEY=VALUE...]`: `local`, `aws.s3:us-east-1`,
/// `gcp:europe-west1,bucket=images`,
/// `azure:tenant_id=T,subscription_id=S,resource_group=G[,location=L]`.
///
/// A bare item after the colon is the region (`location` for azure);
/// `true`/`false` values are booleans (`public=true`), `a+b` lists for
/// `share_with_accounts`.
///
/// The options are read as the composer reads them
/// ([`UploadTarget::from_parts`]): one that does not fit is named as the
/// composer would name it, `image_request.upload_targets[i]…`.
pub(crate) fn parse_targets(specs: &[String]) -> Result<Vec<UploadTarget>, String> {
    specs
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let (kind, options) = target_parts(spec)?;
            UploadTarget::from_parts(kind, Value::Object(options)).map_err(|e: FieldError| {
                format!(
                    "--target {spec:?}: {} (image_request.upload_targets[{i}].{})",
                    e.message, e.field
                )
            })
        })
        .collect()
}

/// The type and the options object of one `--target`.
fn target_parts(spec: &str) -> Result<(&str, Map<String, Value>), String> {
    let (kind, rest) = match spec.split_once(':') {
        Some((k, r)) => (k, Some(r)),
        None => (spec, None),
    };
    if !UPLOAD_TYPES.contains(&kind) {
        return Err(format!(
            "--target {spec:?}: unknown target type {kind:?}; known: {}",
            UPLOAD_TYPES.join(", ")
        ));
    }
    let mut options = Map::new();
    for item in rest.into_iter().flat_map(|r| r.split(',')) {
        if item.is_empty() {
            continue;
        }
        let (key, value) = match item.split_once('=') {
            Some((k, v)) => (k.to_owned(), v),
            None if kind == "azure" => ("location".to_owned(), item),
            None if kind == "local" => {
                return Err(format!(
                    "--target {spec:?}: the local target takes no options"
                ))
            }
            None => ("region".to_owned(), item),
        };
        let value = match value {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            v if key == "share_with_accounts" => json!(v.split('+').collect::<Vec<_>>()),
            v => Value::String(v.to_owned()),
        };
        if options.insert(key.clone(), value).is_some() {
            return Err(format!("--target {spec:?}: {key} given twice"));
        }
    }
    Ok((kind, options))
}

/// `--repository 'URL [SUITE COMPONENT...]'`: a Debian repository needs its
/// suite and components (`http://deb.debian.org/debian bookworm main`), an
/// RPM one only its URL. A leading `deb` or `rpm` word, as in a sources line,
/// is accepted.
pub(crate) fn parse_repository(spec: &str) -> Result<Repository, String> {
    let mut words = spec.split_whitespace().peekable();
    if matches!(words.peek(), Some(&"deb") | Some(&"rpm")) {
        words.next();
    }
    let Some(url) = words.next() else {
        return Err(format!("--repository {spec:?}: no URL"));
    };
    let suite = words.next().map(str::to_owned);
    let components: Vec<String> = words.map(str::to_owned).collect();
    if suite.is_some() && components.is_empty() {
        return Err(format!(
            "--repository {spec:?}: a suite needs at least one component (e.g. '{url} bookworm main')"
        ));
    }
    Ok(Repository {
        baseurl: Some(url.to_owned()),
        suite,
        components: if components.is_empty() {
            None
        } else {
            Some(components)
        },
        ..Default::default()
    })
}

pub(crate) struct ImageFlags<'a> {
    pub distribution: &'a str,
    pub arch: &'a str,
    pub image_type: &'a str,
    pub repositories: &'a [String],
    pub targets: &'a [String],
    pub size: Option<u64>,
    pub blueprint: Option<Blueprint>,
}

/// The request for one image; a `local` target when none is given.
pub(crate) fn from_flags(f: &ImageFlags) -> Result<ComposeRequest, String> {
    let repositories = f
        .repositories
        .iter()
        .map(|r| parse_repository(r))
        .collect::<Result<Vec<_>, _>>()?;
    let mut upload_targets = parse_targets(f.targets)?;
    if upload_targets.is_empty() {
        upload_targets.push(UploadTarget::Local(Default::default()));
    }
    Ok(ComposeRequest {
        distribution: f.distribution.to_owned(),
        image_request: Some(ImageRequest {
            architecture: f.arch.to_owned(),
            image_type: f.image_type.to_owned(),
            // Absent rather than empty: the distribution's own.
            repositories: (!repositories.is_empty()).then_some(repositories),
            upload_targets,
            upload_options: None,
            size: f.size,
        }),
        image_requests: None,
        customizations: None,
        blueprint: f.blueprint.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(spec: &str) -> Result<Value, String> {
        let t = parse_targets(&[spec.to_owned()])?;
        Ok(serde_json::to_value(&t[0]).unwrap())
    }

    #[test]
    fn targets() {
        assert_eq!(
            target("local").unwrap(),
            json!({"type": "local", "upload_options": {}})
        );
        assert_eq!(
            target("aws.s3:us-east-1,public=true").unwrap(),
            json!({"type": "aws.s3", "upload_options": {"region": "us-east-1", "public": true}})
        );
        assert_eq!(
            target("gcp:eu,bucket=images,share_with_accounts=a@x+b@y").unwrap(),
            json!({"type": "gcp", "upload_options": {"region": "eu", "bucket": "images", "share_with_accounts": ["a@x", "b@y"]}})
        );
        assert_eq!(
            target("azure:westeurope,tenant_id=t,subscription_id=s,resource_group=g").unwrap(),
            json!({"type": "azure", "upload_options": {"location": "westeurope", "tenant_id": "t", "subscription_id": "s", "resource_group": "g"}})
        );
        assert!(target("s3:x").unwrap_err().contains("unknown target type"));
        assert!(target("local:x").is_err());
        assert!(target("gcp:a,region=b").unwrap_err().contains("twice"));
        // Options are read as the composer reads them, and named alike.
        let e = target("aws.s3").unwrap_err();
        assert!(
            e.contains("missing field `region` (image_request.upload_targets[0].upload_options)"),
            "{e}"
        );
        let e = parse_targets(&["local".into(), "gcp:eu,colour=blue".into()]).unwrap_err();
        assert!(
            e.contains("(image_request.upload_targets[1].upload_options)"),
            "{e}"
        );
    }

    #[test]
    fn repositories() {
        let r = parse_repository("deb http://deb.debian.org/debian bookworm main contrib").unwrap();
        assert_eq!(r.baseurl.as_deref(), Some("http://deb.debian.org/debian"));
        assert_eq!(r.suite.as_deref(), Some("bookworm"));
        assert_eq!(r.components, Some(vec!["main".into(), "contrib".into()]));
        let r = parse_repository("https://example.com/fedora/x86_64").unwrap();
        assert_eq!((r.suite, r.components), (None, None));
        assert!(parse_repository("http://x bookworm").is_err());
        assert!(parse_repository("  ").is_err());
    }

    #[test]
    fn flags_make_one_image_with_a_local_target_by_default() {
        let req = from_flags(&ImageFlags {
            distribution: "debian-12",
            arch: "x86_64",
            image_type: "pxe",
            repositories: &[],
            targets: &[],
            size: None,
            blueprint: None,
        })
        .unwrap();
        assert_eq!(
            serde_json::to_value(&req).unwrap(),
            json!({
                "distribution": "debian-12",
                "image_request": {
                    "architecture": "x86_64",
                    "image_type": "pxe",
                    "upload_targets": [{"type": "local", "upload_options": {}}]
                }
            })
        );
    }
}
