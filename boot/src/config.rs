//! Where the boot image store and the boot service are: the `[boot]` table
//! of worker.toml, and the `kiln boot` command's configuration file.

use serde::Deserialize;

use crate::{BootStore, BssClient, Deployer, ServiceConfig, SmdClient};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootConfig {
    /// The bucket of the boot image store.
    pub store: kiln_targets::S3Target,
    /// Key prefix of kiln's images in the bucket.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// The URL nodes fetch the bucket's objects from (`<base_url>/<key>`).
    pub base_url: String,
    pub bss: ServiceConfig,
    pub smd: ServiceConfig,
}

fn default_prefix() -> String {
    "kiln".into()
}

impl BootConfig {
    /// A deployer over this store and these services (S3 with conditional
    /// writes, explicit credentials and endpoint only).
    pub fn deployer(&self) -> Result<Deployer, String> {
        let store = kiln_targets::s3_object_store(&self.store).map_err(|e| e.to_string())?;
        let store =
            BootStore::new(store, &self.prefix, &self.base_url).map_err(|e| e.to_string())?;
        Ok(Deployer::new(
            store,
            BssClient::new(&self.bss).map_err(|e| e.to_string())?,
            SmdClient::new(&self.smd).map_err(|e| e.to_string())?,
        ))
    }
}
