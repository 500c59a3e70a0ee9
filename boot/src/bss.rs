//! A client for OpenCHAMI BSS's `/boot/v1/bootparameters` (swagger
//! definition `BootParams`).

use reqwest::Method;
use serde::{Deserialize, Serialize};

use crate::error::{Result, Service};
use crate::http::{ServiceClient, ServiceConfig};
use crate::node::Xname;

/// BSS's `BootParams`: which hosts (or MACs, NIDs) boot which kernel, initrd
/// and command line. Empty lists and absent strings are left out on the wire.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootParams {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub macs: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nids: Vec<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd: Option<String>,
    #[serde(
        rename = "cloud-init",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub cloud_init: Option<serde_json::Value>,
}

const PATH: &str = "/boot/v1/bootparameters";

/// Hosts per GET: 100 xnames keep the query under 2 KB.
const GET_BATCH: usize = 100;

#[derive(Debug, Clone)]
pub struct BssClient {
    client: ServiceClient,
}

impl BssClient {
    /// Errors name the `bss.*` configuration key that is wrong.
    pub fn new(config: &ServiceConfig) -> Result<BssClient> {
        Ok(BssClient {
            client: ServiceClient::new(Service::Bss, "bss", config)?,
        })
    }

    /// Boot parameters of these hosts; hosts BSS has nothing for are simply
    /// absent from the answer (BSS answers 404 when it has none of them).
    /// Large sets are asked for in batches, to keep URLs short.
    pub async fn get_for_hosts(&self, hosts: &[Xname]) -> Result<Vec<BootParams>> {
        let url = self.client.url(PATH);
        let mut out = Vec::new();
        for batch in hosts.chunks(GET_BATCH) {
            let names: Vec<&str> = batch.iter().map(Xname::as_str).collect();
            let req = self
                .client
                .request(Method::GET, &url)
                .query(&[("name", names.join(","))]);
            if let Some((_, body)) = self.client.send(&Method::GET, &url, req, true).await? {
                out.extend(self.client.decode::<Vec<BootParams>>(&url, &body)?);
            }
        }
        Ok(out)
    }

    /// Every boot parameter entry BSS has.
    pub async fn get_all(&self) -> Result<Vec<BootParams>> {
        let url = self.client.url(PATH);
        let req = self.client.request(Method::GET, &url);
        match self.client.send(&Method::GET, &url, req, false).await? {
            Some((_, body)) => self.client.decode(&url, &body),
            None => Ok(Vec::new()),
        }
    }

    /// Sets (creates or replaces) boot parameters: BSS answers 200, no body.
    pub async fn put(&self, params: &BootParams) -> Result<()> {
        self.write(Method::PUT, params).await
    }

    /// Creates boot parameters; BSS refuses hosts that already have some.
    pub async fn post(&self, params: &BootParams) -> Result<()> {
        self.write(Method::POST, params).await
    }

    /// Changes only the fields given, for hosts that already have an entry.
    pub async fn patch(&self, params: &BootParams) -> Result<()> {
        self.write(Method::PATCH, params).await
    }

    /// Removes the entries of the hosts (MACs, NIDs) named.
    pub async fn delete(&self, params: &BootParams) -> Result<()> {
        self.write(Method::DELETE, params).await
    }

    async fn write(&self, method: Method, params: &BootParams) -> Result<()> {
        let url = self.client.url(PATH);
        let req = self.client.request(method.clone(), &url).json(params);
        self.client.send(&method, &url, req, false).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_shape() {
        let bp = BootParams {
            hosts: vec!["x1000c0s0b0n0".into()],
            kernel: Some("http://s/k".into()),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(&bp).unwrap(),
            serde_json::json!({"hosts": ["x1000c0s0b0n0"], "kernel": "http://s/k"})
        );
        let back: BootParams = serde_json::from_value(serde_json::json!({
            "hosts": ["x1"], "params": "p", "cloud-init": {"meta-data": {}}
        }))
        .unwrap();
        assert_eq!(back.params.as_deref(), Some("p"));
        assert!(back.cloud_init.is_some());
    }
}
