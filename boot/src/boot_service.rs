//! A client for OpenCHAMI boot-service's BootConfiguration resources
//! (`/bootconfigurations`), which replaced BSS in 2026. The service keeps no
//! uniqueness on `metadata.name`, so kiln upserts: one list, then PUT by the
//! `uid` of the resource with kiln's name, or POST when there is none. A PUT
//! replaces the whole `spec`, so kiln always sends all of it.

use std::collections::BTreeMap;

use reqwest::Method;
use serde::{Deserialize, Serialize};

use crate::error::{BootError, Result, Service};
use crate::http::{ServiceClient, ServiceConfig};

const PATH: &str = "/bootconfigurations";

/// A BootConfiguration as kiln reads and writes it. Reading ignores what
/// kiln does not use (`apiVersion`, `kind`, `status`, timestamps).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootConfiguration {
    pub metadata: Metadata,
    pub spec: BootConfigurationSpec,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    #[serde(default)]
    pub name: String,
    /// Given by the service; never sent.
    #[serde(default, skip_serializing)]
    pub uid: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// The resource's `spec`: which nodes (by exact xname, MAC, NID or group)
/// boot which kernel, initrd and command line, and at which priority.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootConfigurationSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub macs: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nids: Vec<i32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    #[serde(default)]
    pub kernel: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct BootServiceClient {
    client: ServiceClient,
}

#[derive(Serialize)]
struct Write<'a> {
    metadata: &'a Metadata,
    spec: &'a BootConfigurationSpec,
}

impl BootServiceClient {
    /// Errors name the `boot_service.*` configuration key that is wrong.
    pub fn new(config: &ServiceConfig) -> Result<BootServiceClient> {
        Ok(BootServiceClient {
            client: ServiceClient::new(Service::BootService, "boot_service", config)?,
        })
    }

    /// Every BootConfiguration the service has.
    pub async fn list(&self) -> Result<Vec<BootConfiguration>> {
        let url = self.client.url(PATH);
        let req = self.client.request(Method::GET, &url);
        match self.client.send(&Method::GET, &url, req, false).await? {
            Some((_, body)) => self.client.decode(&url, &body),
            None => Ok(Vec::new()),
        }
    }

    /// Creates a resource; the service answers it with its `uid`.
    pub async fn create(
        &self,
        metadata: &Metadata,
        spec: &BootConfigurationSpec,
    ) -> Result<BootConfiguration> {
        let url = self.client.url(PATH);
        let req = self
            .client
            .request(Method::POST, &url)
            .json(&Write { metadata, spec });
        match self.client.send(&Method::POST, &url, req, false).await? {
            Some((_, body)) => self.client.decode(&url, &body),
            None => Err(self.decode_error(&url, "no body")),
        }
    }

    /// Replaces the resource's whole spec (and its name, labels merged).
    pub async fn replace(
        &self,
        uid: &str,
        metadata: &Metadata,
        spec: &BootConfigurationSpec,
    ) -> Result<()> {
        let url = self.resource_url(uid)?;
        let req = self
            .client
            .request(Method::PUT, &url)
            .json(&Write { metadata, spec });
        self.client.send(&Method::PUT, &url, req, false).await?;
        Ok(())
    }

    pub async fn delete(&self, uid: &str) -> Result<()> {
        let url = self.resource_url(uid)?;
        let req = self.client.request(Method::DELETE, &url);
        self.client.send(&Method::DELETE, &url, req, false).await?;
        Ok(())
    }

    /// A uid comes from the service and becomes a path segment: only
    /// letters, digits and `-`.
    fn resource_url(&self, uid: &str) -> Result<String> {
        let ok = !uid.is_empty()
            && uid.len() <= 128
            && uid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !ok {
            return Err(self.decode_error(
                &self.client.url(PATH),
                &format!("resource uid {uid:?} is not letters, digits and -"),
            ));
        }
        Ok(self.client.url(&format!("{PATH}/{uid}")))
    }

    fn decode_error(&self, url: &str, reason: &str) -> BootError {
        BootError::Decode {
            service: Service::BootService,
            url: url.to_owned(),
            reason: reason.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_shape() {
        let spec = BootConfigurationSpec {
            hosts: vec!["x1000c0s0b0n0".into()],
            kernel: "http://s/k".into(),
            priority: Some(60),
            ..Default::default()
        };
        let meta = Metadata {
            name: "kiln-x1000c0s0b0n0".into(),
            uid: "ignored".into(),
            labels: BTreeMap::from([("app.kubernetes.io/managed-by".into(), "kiln".into())]),
        };
        assert_eq!(
            serde_json::to_value(Write {
                metadata: &meta,
                spec: &spec
            })
            .unwrap(),
            serde_json::json!({
                "metadata": {"name": "kiln-x1000c0s0b0n0", "labels": {"app.kubernetes.io/managed-by": "kiln"}},
                "spec": {"hosts": ["x1000c0s0b0n0"], "kernel": "http://s/k", "priority": 60}
            })
        );
        let back: BootConfiguration = serde_json::from_value(serde_json::json!({
            "apiVersion": "boot.openchami.io/v1", "kind": "BootConfiguration",
            "metadata": {"name": "n", "uid": "bootconfiguration-1a2b", "createdAt": "2026-12-07T00:00:00Z"},
            "spec": {"kernel": "/k", "nids": [3]}, "status": {}
        }))
        .unwrap();
        assert_eq!(back.metadata.uid, "bootconfiguration-1a2b");
        assert_eq!(back.spec.nids, [3]);
    }

    #[test]
    fn uids_from_the_service_are_checked_before_they_become_paths() {
        let c = BootServiceClient::new(&ServiceConfig::new("http://127.0.0.1:1")).unwrap();
        assert!(c.resource_url("bootconfiguration-0a1b").is_ok());
        for bad in ["", "../nodes", "a/b", "a?b", "a b"] {
            assert!(c.resource_url(bad).is_err(), "{bad}");
        }
    }
}
