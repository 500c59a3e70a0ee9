//! The key test: kiln's package sets equal what `apt-get -s install
//! --no-install-recommends` picks with an empty dpkg status, computed in the
//! same run on the host's real bookworm indexes (/var/lib/apt/lists).

mod common;

use std::collections::BTreeMap;

use kiln_depsolve::{request_names, solve, Request};

const SET_A: &[&str] = &[
    "systemd",
    "systemd-sysv",
    "linux-image-amd64",
    "openssh-server",
    "iproute2",
    "nfs-common",
    "chrony",
    "sudo",
    "less",
    "vim-tiny",
];

fn compare_with_apt(req: Request) {
    let index = common::host_bookworm_index();
    let names = request_names(&index, &req);
    let apt = common::apt_simulate(&names, req.recommends);
    let kiln: BTreeMap<String, String> = solve(&index, &req)
        .unwrap_or_else(|e| panic!("kiln failed: {e}"))
        .packages
        .into_iter()
        .map(|p| (p.name, p.version))
        .collect();
    let only_apt: Vec<_> = apt
        .iter()
        .filter(|(n, v)| kiln.get(*n) != Some(v))
        .collect();
    let only_kiln: Vec<_> = kiln
        .iter()
        .filter(|(n, v)| apt.get(*n) != Some(v))
        .collect();
    assert!(
        only_apt.is_empty() && only_kiln.is_empty(),
        "sets differ ({} apt, {} kiln)\nonly apt: {only_apt:?}\nonly kiln: {only_kiln:?}",
        apt.len(),
        kiln.len()
    );
    assert!(kiln.len() > names.len() / 2);
}

#[test]
fn set_a_with_essential_matches_apt() {
    compare_with_apt(Request {
        packages: SET_A.iter().map(|s| s.to_string()).collect(),
        essential: true,
        recommends: false,
    });
}

#[test]
fn set_a_alone_matches_apt() {
    compare_with_apt(Request {
        packages: SET_A.iter().map(|s| s.to_string()).collect(),
        essential: false,
        recommends: false,
    });
}

#[test]
fn set_b_hpc_node_matches_apt() {
    compare_with_apt(Request {
        packages: common::hpc_node_set(),
        essential: true,
        recommends: false,
    });
}

#[test]
fn set_a_with_recommends_matches_apt() {
    compare_with_apt(Request {
        packages: SET_A.iter().map(|s| s.to_string()).collect(),
        essential: true,
        recommends: true,
    });
}

#[test]
fn set_b_with_recommends_matches_apt() {
    compare_with_apt(Request {
        packages: common::hpc_node_set(),
        essential: true,
        recommends: true,
    });
}

/// Larger and different sets (desktops, Java, databases, a mail server),
/// with and without Recommends: every one must equal apt's choice.
#[test]
fn other_sets_match_apt() {
    let sets: &[(&[&str], bool)] = &[
        (&["gnome-core"], true),
        (&["kde-plasma-desktop"], false),
        (&["default-jdk"], true),
        (&["mariadb-server", "exim4"], false),
        (&["xfce4", "lightdm"], true),
        (&["apache2", "libapache2-mod-php", "python3-pip"], false),
    ];
    for (packages, recommends) in sets {
        compare_with_apt(Request {
            packages: packages.iter().map(|s| s.to_string()).collect(),
            essential: true,
            recommends: *recommends,
        });
    }
}

/// `name=version` pins an older version, as `apt-get install name=version`.
#[test]
fn pinned_older_version_matches_apt() {
    let index = common::host_bookworm_index();
    // The first of these that the three indexes carry in two versions
    // (point releases and updates/security move at different times).
    let candidates = [
        "tzdata",
        "distro-info-data",
        "sudo",
        "rsync",
        "libexpat1",
        "curl",
        "git",
    ];
    let (name, oldest) = candidates
        .iter()
        .find_map(|&n| {
            let id = index.lookup(n)?;
            let versions: Vec<String> = index
                .versions(id)
                .iter()
                .map(|&p| index.version(index.package(p)).to_string())
                .collect();
            let oldest = versions
                .iter()
                .min_by(|a, b| kiln_depsolve::version::compare(a, b))?
                .clone();
            let newest = index.version(index.package(index.candidate(id)?));
            (oldest != newest).then_some((n, oldest))
        })
        .expect("none of the probe packages has two versions in the host indexes");
    let req = Request {
        packages: vec![format!("{name}={oldest}"), "openssh-client".into()],
        essential: false,
        recommends: false,
    };
    let sol = solve(&index, &req).unwrap();
    assert!(sol
        .packages
        .iter()
        .any(|p| p.name == name && p.version == oldest));
    compare_with_apt(req);
}
