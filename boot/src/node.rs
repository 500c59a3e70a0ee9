//! Node identities (xnames, MAC addresses, NIDs) and how a caller names a
//! set of nodes. Everything is resolved to xnames before BSS is touched, so
//! the deployment history has one stable key per node.

use serde::{Deserialize, Serialize};

use crate::error::{BootError, Result};

/// A node xname: `x<cabinet>c<chassis>s<slot>b<bmc>n<node>`, e.g. `x1000c0s0b0n0`.
///
/// Only node xnames are accepted: BSS tags such as `Default` or `Compute`
/// would change every node of a role, which kiln does not do implicitly.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Xname(String);

impl Xname {
    /// Parses `value`; `field` names it in the error (e.g. `nodes.xnames[2]`).
    pub fn parse(field: &str, value: &str) -> Result<Xname> {
        if is_node_xname(value) {
            Ok(Xname(value.to_owned()))
        } else {
            Err(BootError::InvalidXname {
                field: field.to_owned(),
                value: value.to_owned(),
            })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Xname {
    type Error = BootError;
    fn try_from(value: String) -> Result<Self> {
        Xname::parse("xname", &value)
    }
}

impl From<Xname> for String {
    fn from(x: Xname) -> String {
        x.0
    }
}

impl std::fmt::Display for Xname {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// `x` then the letters `c s b n`, each followed by a decimal number without
/// leading zeros (HMS writes them that way; `x01` is not the same name as `x1`).
fn is_node_xname(s: &str) -> bool {
    let mut rest = s;
    for (letter, max_digits) in [('x', 4), ('c', 2), ('s', 3), ('b', 2), ('n', 2)] {
        let Some(after) = rest.strip_prefix(letter) else {
            return false;
        };
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > max_digits || (digits > 1 && after.starts_with('0')) {
            return false;
        }
        rest = &after[digits..];
    }
    rest.is_empty()
}

/// A MAC address, kept as six lower-case hex octets joined by colons (the
/// form BSS stores and SMD reports).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MacAddress(String);

impl MacAddress {
    /// Accepts `aa:bb:cc:dd:ee:ff`, `aa-bb-cc-dd-ee-ff` or `aabbccddeeff`, any case.
    pub fn parse(field: &str, value: &str) -> Result<MacAddress> {
        let invalid = || BootError::InvalidMac {
            field: field.to_owned(),
            value: value.to_owned(),
        };
        let hex: String = if value.len() == 17 {
            let sep = value.as_bytes()[2];
            if sep != b':' && sep != b'-' {
                return Err(invalid());
            }
            let mut out = String::with_capacity(12);
            for (i, part) in value.split(sep as char).enumerate() {
                if i > 5 || part.len() != 2 {
                    return Err(invalid());
                }
                out.push_str(part);
            }
            out
        } else if value.len() == 12 {
            value.to_owned()
        } else {
            return Err(invalid());
        };
        if hex.len() != 12 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid());
        }
        let hex = hex.to_ascii_lowercase();
        let octets: Vec<&str> = (0..6).map(|i| &hex[2 * i..2 * i + 2]).collect();
        Ok(MacAddress(octets.join(":")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for MacAddress {
    type Error = BootError;
    fn try_from(value: String) -> Result<Self> {
        MacAddress::parse("mac", &value)
    }
}

impl From<MacAddress> for String {
    fn from(m: MacAddress) -> String {
        m.0
    }
}

impl std::fmt::Display for MacAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which nodes an operation acts on. The CLI or job arguments build one with
/// [`NodeSelector::xnames`], [`NodeSelector::macs`], [`NodeSelector::nids`] or
/// [`NodeSelector::group`], which validate their input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeSelector {
    Xnames(Vec<Xname>),
    Macs(Vec<MacAddress>),
    Nids(Vec<u32>),
    /// An SMD group label; its members are read from SMD.
    Group(String),
}

impl NodeSelector {
    /// The selection of a compose's `boot` upload target: exactly one of
    /// xnames, MACs, NIDs or an SMD group.
    pub fn from_request(n: &kiln_api::compose::BootNodes) -> Result<NodeSelector> {
        match (&n.xnames, &n.macs, &n.nids, &n.group) {
            (Some(x), None, None, None) => NodeSelector::xnames(x),
            (None, Some(m), None, None) => NodeSelector::macs(m),
            (None, None, Some(ids), None) => NodeSelector::nids(ids),
            (None, None, None, Some(g)) => NodeSelector::group(g),
            _ => Err(BootError::InvalidField {
                field: "nodes".into(),
                reason: "name the nodes by exactly one of xnames, macs, nids or group".into(),
            }),
        }
    }

    /// Field names in errors are `nodes.xnames[i]`.
    pub fn xnames<S: AsRef<str>>(values: &[S]) -> Result<NodeSelector> {
        non_empty("nodes.xnames", values)?;
        let parsed = values
            .iter()
            .enumerate()
            .map(|(i, v)| Xname::parse(&format!("nodes.xnames[{i}]"), v.as_ref()))
            .collect::<Result<Vec<_>>>()?;
        Ok(NodeSelector::Xnames(parsed))
    }

    /// Field names in errors are `nodes.macs[i]`.
    pub fn macs<S: AsRef<str>>(values: &[S]) -> Result<NodeSelector> {
        non_empty("nodes.macs", values)?;
        let parsed = values
            .iter()
            .enumerate()
            .map(|(i, v)| MacAddress::parse(&format!("nodes.macs[{i}]"), v.as_ref()))
            .collect::<Result<Vec<_>>>()?;
        Ok(NodeSelector::Macs(parsed))
    }

    pub fn nids(values: &[u32]) -> Result<NodeSelector> {
        non_empty("nodes.nids", values)?;
        Ok(NodeSelector::Nids(values.to_vec()))
    }

    /// SMD group labels are lower-case letters, digits and `-_.:`.
    pub fn group(label: &str) -> Result<NodeSelector> {
        let ok = !label.is_empty()
            && label.len() <= 255
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.:".contains(&b));
        if !ok {
            return Err(BootError::InvalidField {
                field: "nodes.group".into(),
                reason: format!(
                    "{label:?} is not an SMD group label (lower-case letters, digits and -_.:)"
                ),
            });
        }
        Ok(NodeSelector::Group(label.to_owned()))
    }

    /// A short description for logs and deployment records.
    pub fn describe(&self) -> String {
        fn list<T: std::fmt::Display>(kind: &str, v: &[T]) -> String {
            let items: Vec<String> = v.iter().map(ToString::to_string).collect();
            format!("{kind} {}", items.join(","))
        }
        match self {
            NodeSelector::Xnames(v) => list("xnames", v),
            NodeSelector::Macs(v) => list("macs", v),
            NodeSelector::Nids(v) => list("nids", v),
            NodeSelector::Group(g) => format!("group {g}"),
        }
    }
}

fn non_empty<T>(field: &str, values: &[T]) -> Result<()> {
    if values.is_empty() {
        return Err(BootError::EmptySelection {
            field: field.to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xnames() {
        for ok in [
            "x1000c0s0b0n0",
            "x3000c0s19b1n0",
            "x0c0s0b0n0",
            "x9999c7s64b1n7",
        ] {
            assert!(Xname::parse("f", ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "x1000",
            "x1000c0s0b0",
            "x1000c0s0b0n0p0",
            "X1000c0s0b0n0",
            "x01c0s0b0n0",
            "x1000c0s0b0n",
            "x10000c0s0b0n0",
            "node1",
            "x1000c0s0b0n0 ",
        ] {
            let e = Xname::parse("nodes.xnames[3]", bad).unwrap_err();
            assert!(e.to_string().starts_with("nodes.xnames[3]: "), "{e}");
        }
    }

    #[test]
    fn macs_are_normalised() {
        for ok in ["02:00:00:AB:cd:01", "02-00-00-ab-cd-01", "020000ABCD01"] {
            assert_eq!(
                MacAddress::parse("f", ok).unwrap().as_str(),
                "02:00:00:ab:cd:01"
            );
        }
        for bad in [
            "",
            "02:00:00:ab:cd",
            "02:00:00:ab:cd:0g",
            "02:00-00:ab:cd:01",
            "0200:00:ab:cd:01x",
        ] {
            let e = MacAddress::parse("nodes.macs[0]", bad).unwrap_err();
            assert!(e.to_string().starts_with("nodes.macs[0]: "), "{e}");
        }
    }

    #[test]
    fn selectors_name_the_bad_field() {
        let e = NodeSelector::xnames(&["x1c0s0b0n0", "nope"]).unwrap_err();
        assert!(e.to_string().contains("nodes.xnames[1]"), "{e}");
        let e = NodeSelector::macs(&["02:00:00:00:00:01", "zz"]).unwrap_err();
        assert!(e.to_string().contains("nodes.macs[1]"), "{e}");
        let e = NodeSelector::group("Compute Nodes").unwrap_err();
        assert!(e.to_string().contains("nodes.group"), "{e}");
        let e = NodeSelector::nids(&[]).unwrap_err();
        assert!(e.to_string().contains("nodes.nids"), "{e}");
    }
}
