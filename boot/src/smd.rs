//! A client for the parts of OpenCHAMI SMD (HSM v2) kiln needs: group
//! members, and the xnames behind NIDs and MAC addresses.

use std::collections::BTreeMap;

use reqwest::Method;
use serde::Deserialize;

use crate::error::{BootError, Result, Service};
use crate::http::{ServiceClient, ServiceConfig};
use crate::node::{MacAddress, Xname};

const BASE: &str = "/hsm/v2";

#[derive(Debug, Clone)]
pub struct SmdClient {
    client: ServiceClient,
}

#[derive(Deserialize)]
struct Members {
    #[serde(default)]
    ids: Vec<String>,
}

#[derive(Deserialize)]
struct ComponentArray {
    #[serde(rename = "Components", default)]
    components: Vec<Component>,
}

#[derive(Deserialize)]
struct Component {
    #[serde(rename = "ID")]
    id: String,
    #[serde(rename = "NID")]
    nid: Option<i64>,
}

#[derive(Deserialize)]
struct EthernetInterface {
    #[serde(rename = "MACAddress")]
    mac: String,
    #[serde(rename = "ComponentID", default)]
    component_id: String,
}

impl SmdClient {
    /// Errors name the `smd.*` configuration key that is wrong.
    pub fn new(config: &ServiceConfig) -> Result<SmdClient> {
        Ok(SmdClient {
            client: ServiceClient::new(Service::Smd, "smd", config)?,
        })
    }

    /// The members of group `label`, as xnames.
    pub async fn group_members(&self, label: &str) -> Result<Vec<Xname>> {
        // The label goes into the path: only SMD's label characters pass.
        crate::node::NodeSelector::group(label)?;
        let url = self.client.url(&format!("{BASE}/groups/{label}/members"));
        let req = self.client.request(Method::GET, &url);
        let Some((_, body)) = self.client.send(&Method::GET, &url, req, true).await? else {
            return Err(BootError::UnknownNodes {
                service: Service::Smd,
                field: "nodes.group".into(),
                values: format!("group {label:?} (no such group)"),
            });
        };
        let members: Members = self.client.decode(&url, &body)?;
        members
            .ids
            .iter()
            .map(|id| Ok(Xname::parse(&format!("SMD group {label} member"), id)?))
            .collect()
    }

    /// The node xname of each NID, in the order given; every NID must be known.
    pub async fn xnames_for_nids(&self, nids: &[u32]) -> Result<Vec<Xname>> {
        let url = self.client.url(&format!("{BASE}/State/Components"));
        let mut query: Vec<(&str, String)> = vec![("type", "Node".into())];
        query.extend(nids.iter().map(|n| ("nid", n.to_string())));
        let req = self.client.request(Method::GET, &url).query(&query);
        let (_, body) = self
            .client
            .send(&Method::GET, &url, req, false)
            .await?
            .ok_or_else(|| unknown("nodes.nids", nids))?;
        let found: ComponentArray = self.client.decode(&url, &body)?;
        let by_nid: BTreeMap<i64, String> = found
            .components
            .into_iter()
            .filter_map(|c| Some((c.nid?, c.id)))
            .collect();
        let missing: Vec<u32> = nids
            .iter()
            .copied()
            .filter(|n| !by_nid.contains_key(&i64::from(*n)))
            .collect();
        if !missing.is_empty() {
            return Err(unknown("nodes.nids", &missing));
        }
        nids.iter()
            .map(|n| {
                let id = by_nid.get(&i64::from(*n)).map(String::as_str).unwrap_or("");
                Ok(Xname::parse(&format!("SMD component of NID {n}"), id)?)
            })
            .collect()
    }

    /// The node xname of each MAC address, in the order given; every MAC must
    /// belong to a discovered component.
    pub async fn xnames_for_macs(&self, macs: &[MacAddress]) -> Result<Vec<Xname>> {
        let url = self
            .client
            .url(&format!("{BASE}/Inventory/EthernetInterfaces"));
        let query: Vec<(&str, &str)> = macs.iter().map(|m| ("MACAddress", m.as_str())).collect();
        let req = self.client.request(Method::GET, &url).query(&query);
        let (_, body) = self
            .client
            .send(&Method::GET, &url, req, false)
            .await?
            .ok_or_else(|| unknown("nodes.macs", macs))?;
        let found: Vec<EthernetInterface> = self.client.decode(&url, &body)?;
        let by_mac: BTreeMap<MacAddress, String> = found
            .into_iter()
            .filter(|e| !e.component_id.is_empty())
            .filter_map(|e| {
                Some((
                    MacAddress::parse("MACAddress", &e.mac).ok()?,
                    e.component_id,
                ))
            })
            .collect();
        let missing: Vec<&MacAddress> = macs.iter().filter(|m| !by_mac.contains_key(m)).collect();
        if !missing.is_empty() {
            return Err(unknown("nodes.macs", &missing));
        }
        macs.iter()
            .map(|m| {
                let id = by_mac.get(m).map(String::as_str).unwrap_or("");
                Ok(Xname::parse(&format!("SMD component of MAC {m}"), id)?)
            })
            .collect()
    }
}

fn unknown<T: std::fmt::Display>(field: &str, values: &[T]) -> BootError {
    let values: Vec<String> = values.iter().map(ToString::to_string).collect();
    BootError::UnknownNodes {
        service: Service::Smd,
        field: field.to_owned(),
        values: values.join(", "),
    }
}
