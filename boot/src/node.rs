//! Node identities and how a caller names a set of nodes. The types and the
//! rule (exactly one of xnames, MACs, NIDs or an SMD group, each well
//! formed) are kiln-api's, so that a compose's `boot` target is checked
//! where the request is read; here they report [`BootError`]s. Everything
//! is resolved to xnames before BSS is touched, so the deployment history
//! has one stable key per node.

pub use kiln_api::nodes::{MacAddress, NodeError, NodeSelection, Xname};

use crate::error::Result;

/// Which nodes an operation acts on: a checked [`NodeSelection`]. The CLI
/// builds one with [`NodeSelector::xnames`], [`NodeSelector::macs`],
/// [`NodeSelector::nids`] or [`NodeSelector::group`]; a compose's boot
/// target hands over its own ([`From<NodeSelection>`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSelector(NodeSelection);

impl NodeSelector {
    /// Field names in errors are `nodes.xnames[i]`.
    pub fn xnames<S: AsRef<str>>(values: &[S]) -> Result<NodeSelector> {
        Ok(NodeSelector(NodeSelection::xnames(values)?))
    }

    /// Field names in errors are `nodes.macs[i]`.
    pub fn macs<S: AsRef<str>>(values: &[S]) -> Result<NodeSelector> {
        Ok(NodeSelector(NodeSelection::macs(values)?))
    }

    pub fn nids(values: &[u32]) -> Result<NodeSelector> {
        Ok(NodeSelector(NodeSelection::nids(values)?))
    }

    /// SMD group labels are lower-case letters, digits and `-_.:`.
    pub fn group(label: &str) -> Result<NodeSelector> {
        Ok(NodeSelector(NodeSelection::group(label)?))
    }

    pub fn selection(&self) -> &NodeSelection {
        &self.0
    }

    /// A short description for logs and deployment records.
    pub fn describe(&self) -> String {
        self.0.describe()
    }
}

impl From<NodeSelection> for NodeSelector {
    fn from(s: NodeSelection) -> NodeSelector {
        NodeSelector(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BootError;

    #[test]
    fn selectors_report_boot_errors_naming_the_field() {
        let e = NodeSelector::xnames(&["x1c0s0b0n0", "nope"]).unwrap_err();
        assert!(matches!(e, BootError::InvalidXname { .. }), "{e}");
        assert!(e.to_string().contains("nodes.xnames[1]"), "{e}");
        let e = NodeSelector::macs(&["02:00:00:00:00:01", "zz"]).unwrap_err();
        assert!(matches!(e, BootError::InvalidMac { .. }), "{e}");
        let e = NodeSelector::group("Compute Nodes").unwrap_err();
        assert!(e.to_string().starts_with("nodes.group: "), "{e}");
        let e = NodeSelector::nids(&[]).unwrap_err();
        assert!(matches!(e, BootError::EmptySelection { .. }), "{e}");
    }
}
