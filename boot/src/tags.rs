//! Release tags in the boot store: `_tags/<release>/<version>/<seq>.json`,
//! one [`TagRecord`] per time the tag was set. Setting or moving a tag adds
//! a record (a conditional create of the next sequence number, so two
//! movers cannot both win); nothing is overwritten, and the latest record is
//! what the tag names.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{BootError, Result};
use crate::image::{BootRecord, ImageRef};
use crate::store::BootStore;

pub use kiln_api::boot::ReleaseTag;

pub const TAGS_DIR: &str = "_tags";
pub const TAG_KIND: &str = "kiln.boot-tag.v1";

/// `_tags/<release>/<version>/<seq>.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagRecord {
    pub kind: String,
    pub tag: ReleaseTag,
    pub image: ImageRef,
    pub compose_id: Uuid,
    pub created: DateTime<Utc>,
    /// What the tag named before this record, when it was moved.
    pub previous: Option<ImageRef>,
}

impl BootStore {
    async fn tag_records(&self, tag: &ReleaseTag) -> Result<Vec<object_store::path::Path>> {
        self.list(&[TAGS_DIR, tag.release(), tag.version()]).await
    }

    /// What `tag` names now.
    pub async fn tag(&self, tag: &ReleaseTag) -> Result<Option<TagRecord>> {
        match self.tag_records(tag).await?.last() {
            Some(key) => self.get_json(key, "release tag record").await,
            None => Ok(None),
        }
    }

    /// Every tag with what it names now.
    pub async fn tags(&self) -> Result<Vec<TagRecord>> {
        let mut latest: BTreeMap<String, object_store::path::Path> = BTreeMap::new();
        for key in self.list(&[TAGS_DIR]).await? {
            let dir = key
                .as_ref()
                .rsplit_once('/')
                .map(|(d, _)| d.to_owned())
                .unwrap_or_default();
            latest.insert(dir, key);
        }
        let mut out = Vec::new();
        for key in latest.values() {
            if let Some(r) = self.get_json(key, "release tag record").await? {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// Points `tag` at `record`'s image. A tag that names another image
    /// moves only with `force`; one that names this image already is left
    /// as it is. Returns the record that is in effect afterwards.
    pub async fn set_tag(
        &self,
        tag: &ReleaseTag,
        record: &BootRecord,
        force: bool,
    ) -> Result<TagRecord> {
        let existing = self.tag_records(tag).await?;
        let current: Option<TagRecord> = match existing.last() {
            Some(key) => self.get_json(key, "release tag record").await?,
            None => None,
        };
        let image = record.image_ref();
        if let Some(c) = &current {
            if c.image == image {
                return Ok(c.clone());
            }
            if !force {
                return Err(BootError::TagExists {
                    tag: tag.to_string(),
                    current: c.image.to_string(),
                    requested: image.to_string(),
                });
            }
        }
        let next = TagRecord {
            kind: TAG_KIND.into(),
            tag: tag.clone(),
            image,
            compose_id: record.compose_id,
            created: Utc::now(),
            previous: current.map(|c| c.image),
        };
        let seq = format!("{:06}.json", existing.len() + 1);
        self.put_new_json(
            &self.key(&[TAGS_DIR, tag.release(), tag.version(), &seq]),
            &next,
        )
        .await?;
        Ok(next)
    }
}
