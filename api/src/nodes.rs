//! How a caller names cluster nodes: xnames, MAC addresses, NIDs or an SMD
//! group. The rule (exactly one kind, each value well formed) is checked
//! once, where a request is read: a compose's `boot` target holds a
//! [`NodeSelection`], and kiln-boot acts on it without checking again.

use serde::{Deserialize, Serialize};

use crate::compose::BootNodes;

/// A node list or label that is not well formed; `field` names it
/// (e.g. `nodes.xnames[2]`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    #[error("{field}: {value:?} is not a node xname (expected x<cabinet>c<chassis>s<slot>b<bmc>n<node>, e.g. x1000c0s0b0n0)")]
    InvalidXname { field: String, value: String },
    #[error(
        "{field}: {value:?} is not a MAC address (expected six hex octets, e.g. 02:00:00:00:00:01)"
    )]
    InvalidMac { field: String, value: String },
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("{field}: the node selection is empty")]
    Empty { field: String },
}

impl NodeError {
    /// The field at fault, relative to the request's `nodes` parent.
    pub fn field(&self) -> &str {
        match self {
            NodeError::InvalidXname { field, .. }
            | NodeError::InvalidMac { field, .. }
            | NodeError::Invalid { field, .. }
            | NodeError::Empty { field } => field,
        }
    }
}

/// What [`NodeSelection::from_request`] says when no kind or several are given.
pub const EXACTLY_ONE: &str = "name the nodes by exactly one of xnames, macs, nids or group";

/// A node xname: `x<cabinet>c<chassis>s<slot>b<bmc>n<node>`, e.g. `x1000c0s0b0n0`.
///
/// Only node xnames are accepted: BSS tags such as `Default` or `Compute`
/// would change every node of a role, which kiln does not do implicitly.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Xname(String);

impl Xname {
    /// Parses `value`; `field` names it in the error (e.g. `nodes.xnames[2]`).
    pub fn parse(field: &str, value: &str) -> Result<Xname, NodeError> {
        if is_node_xname(value) {
            Ok(Xname(value.to_owned()))
        } else {
            Err(NodeError::InvalidXname {
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
    type Error = NodeError;
    fn try_from(value: String) -> Result<Self, NodeError> {
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
    pub fn parse(field: &str, value: &str) -> Result<MacAddress, NodeError> {
        let invalid = || NodeError::InvalidMac {
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
    type Error = NodeError;
    fn try_from(value: String) -> Result<Self, NodeError> {
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

/// Which nodes boot an image, or an admin's command acts on. Built by
/// [`NodeSelection::from_request`] (a compose's `nodes`) or by
/// [`NodeSelection::xnames`], [`NodeSelection::macs`],
/// [`NodeSelection::nids`] and [`NodeSelection::group`], which check their
/// input. On the wire it is the request's [`BootNodes`] object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "BootNodes", into = "BootNodes")]
pub enum NodeSelection {
    Xnames(Vec<Xname>),
    Macs(Vec<MacAddress>),
    Nids(Vec<u32>),
    /// An SMD group label; its members are read from SMD.
    Group(String),
}

impl NodeSelection {
    /// Exactly one of xnames, MACs, NIDs or an SMD group; error fields are
    /// `nodes…`.
    pub fn from_request(n: &BootNodes) -> Result<NodeSelection, NodeError> {
        match (&n.xnames, &n.macs, &n.nids, &n.group) {
            (Some(x), None, None, None) => NodeSelection::xnames(x),
            (None, Some(m), None, None) => NodeSelection::macs(m),
            (None, None, Some(ids), None) => NodeSelection::nids(ids),
            (None, None, None, Some(g)) => NodeSelection::group(g),
            _ => Err(NodeError::Invalid {
                field: "nodes".into(),
                reason: EXACTLY_ONE.into(),
            }),
        }
    }

    /// Field names in errors are `nodes.xnames[i]`.
    pub fn xnames<S: AsRef<str>>(values: &[S]) -> Result<NodeSelection, NodeError> {
        Ok(NodeSelection::Xnames(parse_each(
            "nodes.xnames",
            values,
            Xname::parse,
        )?))
    }

    /// Field names in errors are `nodes.macs[i]`.
    pub fn macs<S: AsRef<str>>(values: &[S]) -> Result<NodeSelection, NodeError> {
        Ok(NodeSelection::Macs(parse_each(
            "nodes.macs",
            values,
            MacAddress::parse,
        )?))
    }

    pub fn nids(values: &[u32]) -> Result<NodeSelection, NodeError> {
        non_empty("nodes.nids", values)?;
        Ok(NodeSelection::Nids(values.to_vec()))
    }

    /// SMD group labels are lower-case letters, digits and `-_.:`.
    pub fn group(label: &str) -> Result<NodeSelection, NodeError> {
        let ok = !label.is_empty()
            && label.len() <= 255
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.:".contains(&b));
        if !ok {
            return Err(NodeError::Invalid {
                field: "nodes.group".into(),
                reason: format!(
                    "{label:?} is not an SMD group label (lower-case letters, digits and -_.:)"
                ),
            });
        }
        Ok(NodeSelection::Group(label.to_owned()))
    }

    /// The request field this selection came from (`nodes.xnames`, …).
    pub fn field(&self) -> &'static str {
        match self {
            NodeSelection::Xnames(_) => "nodes.xnames",
            NodeSelection::Macs(_) => "nodes.macs",
            NodeSelection::Nids(_) => "nodes.nids",
            NodeSelection::Group(_) => "nodes.group",
        }
    }

    /// A short description for logs and deployment records.
    pub fn describe(&self) -> String {
        fn list<T: std::fmt::Display>(kind: &str, v: &[T]) -> String {
            let items: Vec<String> = v.iter().map(ToString::to_string).collect();
            format!("{kind} {}", items.join(","))
        }
        match self {
            NodeSelection::Xnames(v) => list("xnames", v),
            NodeSelection::Macs(v) => list("macs", v),
            NodeSelection::Nids(v) => list("nids", v),
            NodeSelection::Group(g) => format!("group {g}"),
        }
    }
}

fn parse_each<S: AsRef<str>, T>(
    field: &str,
    values: &[S],
    parse: fn(&str, &str) -> Result<T, NodeError>,
) -> Result<Vec<T>, NodeError> {
    non_empty(field, values)?;
    values
        .iter()
        .enumerate()
        .map(|(i, v)| parse(&format!("{field}[{i}]"), v.as_ref()))
        .collect()
}

fn non_empty<T>(field: &str, values: &[T]) -> Result<(), NodeError> {
    if values.is_empty() {
        return Err(NodeError::Empty {
            field: field.to_owned(),
        });
    }
    Ok(())
}

impl TryFrom<BootNodes> for NodeSelection {
    type Error = NodeError;
    fn try_from(n: BootNodes) -> Result<Self, NodeError> {
        NodeSelection::from_request(&n)
    }
}

impl From<NodeSelection> for BootNodes {
    fn from(s: NodeSelection) -> BootNodes {
        match s {
            NodeSelection::Xnames(v) => BootNodes {
                xnames: Some(v.into_iter().map(String::from).collect()),
                ..BootNodes::default()
            },
            NodeSelection::Macs(v) => BootNodes {
                macs: Some(v.into_iter().map(String::from).collect()),
                ..BootNodes::default()
            },
            NodeSelection::Nids(v) => BootNodes {
                nids: Some(v),
                ..BootNodes::default()
            },
            NodeSelection::Group(g) => BootNodes {
                group: Some(g),
                ..BootNodes::default()
            },
        }
    }
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
    fn selections_name_the_bad_field() {
        let e = NodeSelection::xnames(&["x1c0s0b0n0", "nope"]).unwrap_err();
        assert_eq!(e.field(), "nodes.xnames[1]");
        let e = NodeSelection::macs(&["02:00:00:00:00:01", "zz"]).unwrap_err();
        assert_eq!(e.field(), "nodes.macs[1]");
        let e = NodeSelection::group("Compute Nodes").unwrap_err();
        assert_eq!(e.field(), "nodes.group");
        let e = NodeSelection::nids(&[]).unwrap_err();
        assert_eq!(e.field(), "nodes.nids");
        let e = NodeSelection::from_request(&BootNodes {
            nids: Some(vec![1]),
            group: Some("compute".into()),
            ..BootNodes::default()
        })
        .unwrap_err();
        assert_eq!(e.to_string(), format!("nodes: {EXACTLY_ONE}"));
    }

    #[test]
    fn a_selection_is_the_request_object_on_the_wire() {
        let s: NodeSelection =
            serde_json::from_value(serde_json::json!({"macs": ["02-00-00-00-00-0A"]})).unwrap();
        assert_eq!(s, NodeSelection::macs(&["02:00:00:00:00:0a"]).unwrap());
        assert_eq!(
            serde_json::to_value(&s).unwrap(),
            serde_json::json!({"macs": ["02:00:00:00:00:0a"]})
        );
    }
}
