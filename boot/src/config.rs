//! Where the boot image store and the boot service are: the `[boot]` table
//! of worker.toml. The boot service is OpenCHAMI BSS (`bss`) or its
//! successor boot-service (`boot_service`), exactly one; a site's
//! configuration chooses.

use serde::Deserialize;

use crate::{
    BearerToken, BootService, BootServiceClient, BootStore, BssClient, Deployer, ServiceConfig,
    SmdClient,
};

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
    /// OpenCHAMI BSS (`/boot/v1/bootparameters`); or
    #[serde(default)]
    pub bss: Option<ServiceConfig>,
    /// OpenCHAMI boot-service (`/bootconfigurations`).
    #[serde(default)]
    pub boot_service: Option<BootServiceConfig>,
    pub smd: ServiceConfig,
}

/// `[boot.boot_service]`: where boot-service is and the priorities of
/// kiln's BootConfigurations (0..=100; a canary's above a publish's).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootServiceConfig {
    pub url: String,
    #[serde(default)]
    pub token: Option<BearerToken>,
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    #[serde(default = "default_priority")]
    pub priority: u8,
    #[serde(default = "default_canary_priority")]
    pub canary_priority: u8,
}

fn default_prefix() -> String {
    "kiln".into()
}

fn default_timeout() -> u64 {
    30
}

fn default_priority() -> u8 {
    50
}

fn default_canary_priority() -> u8 {
    60
}

impl BootServiceConfig {
    pub fn new(url: impl Into<String>) -> BootServiceConfig {
        BootServiceConfig {
            url: url.into(),
            token: None,
            timeout_secs: default_timeout(),
            priority: default_priority(),
            canary_priority: default_canary_priority(),
        }
    }

    /// The client and priorities; errors name the `boot_service.*` key.
    pub fn service(&self) -> Result<BootService, String> {
        if self.priority > 100 || self.canary_priority > 100 {
            return Err("boot_service.priority, boot_service.canary_priority: 0 to 100".into());
        }
        if self.canary_priority <= self.priority {
            return Err(format!(
                "boot_service.canary_priority: {} must be above boot_service.priority ({})",
                self.canary_priority, self.priority
            ));
        }
        let service = ServiceConfig {
            url: self.url.clone(),
            token: self.token.clone(),
            timeout_secs: self.timeout_secs,
        };
        Ok(BootService::BootService {
            client: BootServiceClient::new(&service).map_err(|e| e.to_string())?,
            priority: self.priority,
            canary_priority: self.canary_priority,
        })
    }
}

impl BootConfig {
    /// A deployer over this store and these services (S3 with conditional
    /// writes, explicit credentials and endpoint only).
    pub fn deployer(&self) -> Result<Deployer, String> {
        let service = match (&self.bss, &self.boot_service) {
            (Some(bss), None) => BootService::Bss(BssClient::new(bss).map_err(|e| e.to_string())?),
            (None, Some(bs)) => bs.service()?,
            _ => {
                return Err("boot: configure exactly one boot service, bss or boot_service".into())
            }
        };
        let store = kiln_targets::s3_object_store(&self.store).map_err(|e| e.to_string())?;
        let store =
            BootStore::new(store, &self.prefix, &self.base_url).map_err(|e| e.to_string())?;
        Ok(Deployer::new(
            store,
            service,
            SmdClient::new(&self.smd).map_err(|e| e.to_string())?,
        ))
    }
}
