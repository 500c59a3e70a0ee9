//! One shape for what an image customizes, whichever way the request spelled
//! it (the Cloud API's `customizations` or a blueprint's).

use kiln_api::customizations::{
    Blueprint, BlueprintCustomizations, CloudInit, Customizations, Directory, File, Group, Kernel,
    Locale, OciConfig, Services, Timezone,
};
use kiln_api::validate::parse_size;
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Account {
    pub name: String,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub groups: Vec<String>,
    pub description: Option<String>,
    pub home: Option<String>,
    pub shell: Option<String>,
    pub password: Option<String>,
    pub keys: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub path: String,
    pub mode: Option<String>,
    pub user: Option<Value>,
    pub group: Option<Value>,
    pub parents: bool,
    /// `Some` for a file, `None` for a directory.
    pub data: Option<String>,
}

/// Everything an image customizes, normalised.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ImageCustomizations {
    pub packages: Vec<String>,
    pub hostname: Option<String>,
    pub timezone: Option<String>,
    pub language: Option<String>,
    pub kernel_append: Option<String>,
    pub groups: Vec<(String, Option<u32>)>,
    pub users: Vec<Account>,
    pub enabled: Vec<String>,
    pub disabled: Vec<String>,
    pub masked: Vec<String>,
    pub directories: Vec<Entry>,
    pub files: Vec<Entry>,
    pub cloud_init_datasource: Option<String>,
    /// Minimum sizes of file systems (bytes), by mount point.
    pub filesystems: Vec<(String, u64)>,
    /// The container's configuration (`oci` images).
    pub oci: Option<OciConfig>,
}

fn dir_entry(d: &Directory) -> Entry {
    Entry {
        path: d.path.clone(),
        mode: d.mode.clone(),
        user: d.user.clone(),
        group: d.group.clone(),
        parents: d.ensure_parents.unwrap_or(false),
        data: None,
    }
}

fn file_entry(f: &File) -> Entry {
    Entry {
        path: f.path.clone(),
        mode: f.mode.clone(),
        user: f.user.clone(),
        group: f.group.clone(),
        parents: f.ensure_parents.unwrap_or(false),
        data: Some(f.data.clone().unwrap_or_default()),
    }
}

/// [`Shared`] of either spelling: the two types name these fields alike,
/// but for the groups (`groups` in the Cloud API, `group` in a blueprint).
macro_rules! shared {
    ($c:expr, $groups:ident) => {
        Shared {
            hostname: &$c.hostname,
            timezone: &$c.timezone,
            locale: &$c.locale,
            kernel: &$c.kernel,
            services: &$c.services,
            groups: &$c.$groups,
            directories: &$c.directories,
            files: &$c.files,
            cloud_init: &$c.cloud_init,
            oci: &$c.oci,
        }
    };
}

/// The parts both spellings share, by reference.
struct Shared<'a> {
    hostname: &'a Option<String>,
    timezone: &'a Option<Timezone>,
    locale: &'a Option<Locale>,
    kernel: &'a Option<Kernel>,
    services: &'a Option<Services>,
    groups: &'a Option<Vec<Group>>,
    directories: &'a Option<Vec<Directory>>,
    files: &'a Option<Vec<File>>,
    cloud_init: &'a Option<CloudInit>,
    oci: &'a Option<OciConfig>,
}

impl Shared<'_> {
    fn normalise(self) -> ImageCustomizations {
        let s = self.services.clone().unwrap_or_default();
        ImageCustomizations {
            hostname: self.hostname.clone(),
            timezone: self.timezone.as_ref().and_then(|t| t.timezone.clone()),
            language: self
                .locale
                .as_ref()
                .and_then(|l| l.languages.as_ref()?.first().cloned()),
            kernel_append: self.kernel.as_ref().and_then(|k| k.append.clone()),
            groups: self
                .groups
                .iter()
                .flatten()
                .map(|g| (g.name.clone(), g.gid))
                .collect(),
            enabled: s.enabled.unwrap_or_default(),
            disabled: s.disabled.unwrap_or_default(),
            masked: s.masked.unwrap_or_default(),
            directories: self.directories.iter().flatten().map(dir_entry).collect(),
            files: self.files.iter().flatten().map(file_entry).collect(),
            cloud_init_datasource: self.cloud_init.as_ref().map(|c| c.datasource.clone()),
            oci: self.oci.clone(),
            ..Default::default()
        }
    }
}

impl ImageCustomizations {
    pub fn from_customizations(c: &Customizations) -> ImageCustomizations {
        ImageCustomizations {
            packages: c.packages.clone().unwrap_or_default(),
            users: c
                .users
                .iter()
                .flatten()
                .map(|u| Account {
                    name: u.name.clone(),
                    groups: u.groups.clone().unwrap_or_default(),
                    password: u.password.clone(),
                    keys: u.key.iter().cloned().collect(),
                    ..Default::default()
                })
                .collect(),
            filesystems: c
                .filesystem
                .iter()
                .flatten()
                .map(|f| (f.mountpoint.clone(), f.min_size))
                .collect(),
            ..shared!(c, groups).normalise()
        }
    }

    /// A blueprint's customizations and packages. Sizes must already be
    /// validated (`kiln_api::validate`); an unreadable one counts as 0.
    pub fn from_blueprint(b: &Blueprint) -> ImageCustomizations {
        let c: BlueprintCustomizations = b.customizations.clone().unwrap_or_default();
        let mut users: Vec<Account> = c
            .user
            .iter()
            .flatten()
            .map(|u| Account {
                name: u.name.clone(),
                uid: u.uid,
                gid: u.gid,
                groups: u.groups.clone().unwrap_or_default(),
                description: u.description.clone(),
                home: u.home.clone(),
                shell: u.shell.clone(),
                password: u.password.clone(),
                keys: u.key.iter().cloned().collect(),
            })
            .collect();
        // `sshkey` entries add keys to users, creating those not listed.
        for k in c.sshkey.iter().flatten() {
            match users.iter_mut().find(|u| u.name == k.user) {
                Some(u) => u.keys.push(k.key.clone()),
                None => users.push(Account {
                    name: k.user.clone(),
                    keys: vec![k.key.clone()],
                    ..Default::default()
                }),
            }
        }
        ImageCustomizations {
            packages: b
                .packages
                .iter()
                .flatten()
                .chain(b.modules.iter().flatten())
                .map(|p| p.name.clone())
                .collect(),
            users,
            filesystems: c
                .filesystem
                .iter()
                .flatten()
                .map(|f| (f.mountpoint.clone(), parse_size(&f.minsize).unwrap_or(0)))
                .collect(),
            ..shared!(c, group).normalise()
        }
    }
}
