//! The kernel command line BSS hands to a node: the image's own command line
//! with its `root=` pointing at the published squashfs, then the
//! administrator's extra parameters.

use crate::error::{BootError, Result};

/// Splits a kernel command line into parameters, keeping double-quoted
/// values (`foo="a b"`) whole as the kernel does.
pub fn split(cmdline: &str) -> Vec<String> {
    let mut params = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in cmdline.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                current.push(c);
            }
            c if c.is_whitespace() && !quoted => {
                if !current.is_empty() {
                    params.push(std::mem::take(&mut current));
                }
            }
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        params.push(current);
    }
    params
}

fn is_root(param: &str) -> bool {
    param == "root" || param.starts_with("root=")
}

/// `<image cmdline with root=live:<rootfs_url>> <extra>`. The image's
/// `root=` is replaced where it stands (or added at its end); `extra` may
/// not set `root=` itself, since kiln owns where the root comes from.
pub fn boot_params(image_cmdline: &str, rootfs_url: &str, extra: &str) -> Result<String> {
    let extra = split(extra);
    if extra.iter().any(|p| is_root(p)) {
        return Err(BootError::InvalidField {
            field: "extra_params".into(),
            reason: "must not set root=; kiln points root= at the published squashfs".into(),
        });
    }
    let root = format!("root=live:{rootfs_url}");
    let mut params = Vec::new();
    let mut placed = false;
    for p in split(image_cmdline) {
        if is_root(&p) {
            if !placed {
                params.push(root.clone());
                placed = true;
            }
        } else {
            params.push(p);
        }
    }
    if !placed {
        params.push(root);
    }
    params.extend(extra);
    Ok(params.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_replaced_in_place_once() {
        let p = boot_params(
            "console=ttyS0 root=live:CDLABEL=x rd.live.overlay.overlayfs=1 root=/dev/sda",
            "http://s/img/rootfs.squashfs",
            "ip=dhcp",
        )
        .unwrap();
        assert_eq!(
            p,
            "console=ttyS0 root=live:http://s/img/rootfs.squashfs rd.live.overlay.overlayfs=1 ip=dhcp"
        );
    }

    #[test]
    fn root_is_added_when_missing_and_quotes_survive() {
        let p = boot_params(
            "rd.live.overlay.overlayfs=1  quiet",
            "http://s/r",
            r#"foo="a b" rd.shell"#,
        )
        .unwrap();
        assert_eq!(
            p,
            r#"rd.live.overlay.overlayfs=1 quiet root=live:http://s/r foo="a b" rd.shell"#
        );
    }

    #[test]
    fn extra_root_is_refused() {
        let e = boot_params("quiet", "http://s/r", "root=/dev/nfs").unwrap_err();
        assert!(e.to_string().starts_with("extra_params: "), "{e}");
        // rootfstype= or rootflags= are not root=.
        boot_params("quiet", "http://s/r", "rootflags=ro rootwait").unwrap();
    }
}
