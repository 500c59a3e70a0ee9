//! Validation of compose requests: every problem is reported with the JSON
//! path of the field at fault, so that a person can fix the request.

use serde_json::Value;

use crate::compose::Repository;
use crate::customizations::{
    Blueprint, BlueprintUser, CloudInit, Customizations, Directory, File, Kernel, Locale,
    OciConfig, Services, Timezone, User,
};
use crate::error::{ErrorKind, FieldError};

/// The packaging family of a distribution: it decides package-name rules and
/// what a repository needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Debian,
    Rpm,
}

type Check = Result<(), FieldError>;

fn bad(field: &str, message: impl Into<String>) -> FieldError {
    FieldError::new(ErrorKind::InvalidCustomization, field, message)
}

/// Paths an image may not write: the kernel's virtual file systems.
const FORBIDDEN_ROOTS: &[&str] = &["/proc", "/sys", "/dev"];

/// An absolute, normalised path outside `/proc`, `/sys` and `/dev`.
pub fn check_path(field: &str, path: &str) -> Check {
    if path.is_empty() {
        return Err(bad(field, "path is empty"));
    }
    if path.len() > 4096 {
        return Err(bad(field, "path is longer than 4096 bytes"));
    }
    if path.chars().any(|c| c == '\0' || c.is_control()) {
        return Err(bad(field, "path contains control characters"));
    }
    if !path.starts_with('/') {
        return Err(bad(field, format!("path {path:?} is not absolute")));
    }
    if path == "/" {
        return Err(bad(field, "path must name something below /"));
    }
    if path.ends_with('/') {
        return Err(bad(
            field,
            format!("path {path:?} is not normalised (trailing /)"),
        ));
    }
    for part in path[1..].split('/') {
        match part {
            "" => {
                return Err(bad(
                    field,
                    format!("path {path:?} is not normalised (empty component)"),
                ))
            }
            "." | ".." => {
                return Err(bad(
                    field,
                    format!("path {path:?} is not normalised ({part:?} component)"),
                ))
            }
            _ => {}
        }
    }
    for root in FORBIDDEN_ROOTS {
        if path == *root || path.starts_with(&format!("{root}/")) {
            return Err(bad(
                field,
                format!("path {path:?} is under {root}, which the image may not contain"),
            ));
        }
    }
    Ok(())
}

/// A POSIX-portable user or group name, as useradd accepts by default.
pub fn check_account_name(field: &str, name: &str) -> Check {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(bad(
            field,
            format!("{name:?} is not a valid name: 1 to 32 of a-z, 0-9, '_', '-', starting with a letter or '_'"),
        ))
    }
}

/// A crypt(3) hash; kiln never takes a plain-text password.
pub fn check_password_hash(field: &str, hash: &str) -> Check {
    let known = ["$6$", "$5$", "$y$", "$2b$", "$2y$", "$gy$"];
    if known.iter().any(|p| hash.starts_with(p))
        && !hash.chars().any(|c| c.is_whitespace() || c == ':')
    {
        Ok(())
    } else {
        Err(bad(
            field,
            "password must be a crypt(3) hash ($6$, $5$, $y$ or $2b$); plain-text passwords are not accepted",
        ))
    }
}

pub fn check_ssh_key(field: &str, key: &str) -> Check {
    let types = [
        "ssh-ed25519",
        "ssh-rsa",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
        "ssh-dss",
    ];
    let mut parts = key.split_whitespace();
    let kind = parts.next().unwrap_or("");
    let body = parts.next().unwrap_or("");
    if key.contains('\n') || !types.contains(&kind) || body.is_empty() {
        return Err(bad(
            field,
            "not an SSH public key (one line: type, base64 key, optional comment)",
        ));
    }
    if !body
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '/' || c == '=')
    {
        return Err(bad(field, "SSH public key data is not base64"));
    }
    Ok(())
}

/// RFC 1123 host name.
pub fn check_hostname(field: &str, name: &str) -> Check {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    if name.len() <= 253 && name.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(bad(
            field,
            format!("{name:?} is not a valid host name (RFC 1123)"),
        ))
    }
}

/// A systemd unit name, e.g. `sshd`, `sshd.service`, `getty@tty1.service`.
pub fn check_unit_name(field: &str, name: &str) -> Check {
    let ok = !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '.' | '@' | '-' | '\\'));
    if !ok {
        return Err(bad(field, format!("{name:?} is not a systemd unit name")));
    }
    if let Some((_, suffix)) = name.rsplit_once('.') {
        let known = [
            "service",
            "socket",
            "timer",
            "target",
            "mount",
            "automount",
            "path",
            "swap",
            "slice",
            "scope",
            "device",
        ];
        if !known.contains(&suffix) {
            return Err(bad(
                field,
                format!("{name:?} has an unknown unit type .{suffix}"),
            ));
        }
    }
    Ok(())
}

fn check_package_name(field: &str, name: &str) -> Check {
    let ok = !name.is_empty()
        && name.len() <= 255
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '*')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '.' | '-' | '*' | ':'));
    if ok {
        Ok(())
    } else {
        Err(bad(field, format!("{name:?} is not a package name")))
    }
}

fn check_mode(field: &str, mode: &str) -> Check {
    let digits = mode
        .strip_prefix('0')
        .filter(|m| m.len() >= 3)
        .unwrap_or(mode);
    if (3..=4).contains(&digits.len()) && digits.chars().all(|c| ('0'..='7').contains(&c)) {
        Ok(())
    } else {
        Err(bad(
            field,
            format!("{mode:?} is not an octal file mode such as \"0644\""),
        ))
    }
}

fn check_owner(field: &str, owner: &Value) -> Check {
    match owner {
        Value::String(s) => check_account_name(field, s),
        Value::Number(n) if n.as_u64().is_some_and(|n| n <= u32::MAX as u64) => Ok(()),
        _ => Err(bad(
            field,
            "must be a user or group name, or a non-negative numeric id",
        )),
    }
}

fn check_text(field: &str, s: &str, max: usize) -> Check {
    if s.len() > max {
        return Err(bad(field, format!("longer than {max} bytes")));
    }
    if s.chars().any(|c| c.is_control()) {
        return Err(bad(field, "contains control characters"));
    }
    Ok(())
}

fn check_timezone(path: &str, tz: &Timezone) -> Check {
    if let Some(name) = &tz.timezone {
        let field = format!("{path}.timezone");
        let ok = !name.is_empty()
            && name.len() <= 64
            && name.split('/').all(|p| {
                !p.is_empty()
                    && p != "."
                    && p != ".."
                    && p.chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '-'))
            });
        if !ok {
            return Err(bad(
                &field,
                format!("{name:?} is not a time zone name such as Europe/Berlin"),
            ));
        }
    }
    for (i, s) in tz.ntpservers.iter().flatten().enumerate() {
        let field = format!("{path}.ntpservers[{i}]");
        if s.is_empty()
            || !s
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
        {
            return Err(bad(&field, format!("{s:?} is not a host name or address")));
        }
    }
    Ok(())
}

fn check_locale(path: &str, l: &Locale) -> Check {
    for (i, lang) in l.languages.iter().flatten().enumerate() {
        let ok = !lang.is_empty()
            && lang.len() <= 64
            && lang.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && lang
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '@' | '-'));
        if !ok {
            return Err(bad(
                &format!("{path}.languages[{i}]"),
                format!("{lang:?} is not a locale such as en_US.UTF-8"),
            ));
        }
    }
    if let Some(k) = &l.keyboard {
        if k.is_empty()
            || !k
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
        {
            return Err(bad(
                &format!("{path}.keyboard"),
                format!("{k:?} is not a keyboard layout such as us"),
            ));
        }
    }
    Ok(())
}

fn check_services(path: &str, s: &Services) -> Check {
    let lists = [
        ("enabled", &s.enabled),
        ("disabled", &s.disabled),
        ("masked", &s.masked),
    ];
    let mut seen: Vec<(&str, &str)> = Vec::new();
    for (name, list) in lists {
        for (i, unit) in list.iter().flatten().enumerate() {
            let field = format!("{path}.{name}[{i}]");
            check_unit_name(&field, unit)?;
            if let Some((other, _)) = seen.iter().find(|(_, u)| *u == unit) {
                return Err(bad(&field, format!("{unit:?} is also listed in {other}")));
            }
            seen.push((name, unit));
        }
    }
    Ok(())
}

fn check_kernel(path: &str, k: &Kernel) -> Check {
    if let Some(n) = &k.name {
        check_package_name(&format!("{path}.name"), n)?;
    }
    if let Some(a) = &k.append {
        check_text(&format!("{path}.append"), a, 4096)?;
    }
    Ok(())
}

/// What files and directories share: path, mode and owners.
fn check_entry(
    path: &str,
    entry: &str,
    mode: &Option<String>,
    user: &Option<Value>,
    group: &Option<Value>,
) -> Check {
    check_path(&format!("{path}.path"), entry)?;
    check_present(path, "mode", mode.as_deref(), check_mode)?;
    check_present(path, "user", user.as_ref(), check_owner)?;
    check_present(path, "group", group.as_ref(), check_owner)
}

/// Checks `{path}.{name}` with `check` when it is present.
fn check_present<T: ?Sized>(
    path: &str,
    name: &str,
    value: Option<&T>,
    check: impl Fn(&str, &T) -> Check,
) -> Check {
    match value {
        Some(v) => check(&format!("{path}.{name}"), v),
        None => Ok(()),
    }
}

fn check_file(path: &str, f: &File) -> Check {
    check_entry(path, &f.path, &f.mode, &f.user, &f.group)?;
    if f.data.as_ref().is_some_and(|d| d.len() > 1 << 20) {
        return Err(bad(
            &format!("{path}.data"),
            "file data is larger than 1 MiB",
        ));
    }
    Ok(())
}

fn check_directory(path: &str, d: &Directory) -> Check {
    check_entry(path, &d.path, &d.mode, &d.user, &d.group)
}

fn check_datasource(field: &str, ds: &str) -> Check {
    check_text(field, ds, 1024)?;
    if ds.is_empty() || ds.chars().any(char::is_whitespace) {
        return Err(bad(
            field,
            "datasource must be one word such as nocloud-net;s=http://server/path/",
        ));
    }
    Ok(())
}

/// Most entries each list of `oci` may hold, and most labels.
const MAX_OCI_ITEMS: usize = 128;

/// A word of a container's command line or environment.
fn check_words(path: &str, words: &Option<Vec<String>>) -> Check {
    at_most(path, words, MAX_OCI_ITEMS, "entries")?;
    for (i, w) in words.iter().flatten().enumerate() {
        check_text(&format!("{path}[{i}]"), w, 4096)?;
    }
    Ok(())
}

/// An `ExposedPorts` entry: a port from 1 to 65535, with `/tcp`, `/udp`
/// or `/sctp` or without (TCP).
fn check_port(field: &str, port: &str) -> Check {
    let (number, protocol) = port.split_once('/').unwrap_or((port, "tcp"));
    let valid = !number.is_empty()
        && number.len() <= 5
        && number.bytes().all(|b| b.is_ascii_digit())
        && number
            .parse::<u32>()
            .is_ok_and(|n| (1..=65535).contains(&n));
    if !valid || !matches!(protocol, "tcp" | "udp" | "sctp") {
        return Err(bad(
            field,
            format!("{port:?} is not a port such as 8700, 8700/tcp, 53/udp"),
        ));
    }
    Ok(())
}

/// An absolute directory of the container; `/` included.
fn check_container_dir(field: &str, dir: &str) -> Check {
    if dir == "/" {
        return Ok(());
    }
    check_path(field, dir)
}

fn check_oci(path: &str, o: &OciConfig) -> Check {
    check_words(&format!("{path}.entrypoint"), &o.entrypoint)?;
    if o.entrypoint
        .as_ref()
        .is_some_and(|e| e.first().is_none_or(String::is_empty))
    {
        return Err(bad(
            &format!("{path}.entrypoint"),
            "an entrypoint names a program first",
        ));
    }
    check_words(&format!("{path}.cmd"), &o.cmd)?;
    check_words(&format!("{path}.env"), &o.env)?;
    for (i, e) in o.env.iter().flatten().enumerate() {
        let name = e.split_once('=').map(|(n, _)| n);
        let valid = name.is_some_and(|n| {
            n.bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
                && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        });
        if !valid {
            return Err(bad(
                &format!("{path}.env[{i}]"),
                "not NAME=value with a name of letters, digits and _",
            ));
        }
    }
    if let Some(u) = &o.user {
        let part = |p: &str| {
            !p.is_empty()
                && p.len() <= 32
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
                && !p.starts_with('-')
        };
        let valid = match u.split_once(':') {
            Some((user, group)) => part(user) && part(group),
            None => part(u),
        };
        if !valid {
            return Err(bad(
                &format!("{path}.user"),
                format!("{u:?} is not a user name or id, or user:group"),
            ));
        }
    }
    at_most(
        &format!("{path}.exposed_ports"),
        &o.exposed_ports,
        MAX_OCI_ITEMS,
        "ports",
    )?;
    for (i, p) in o.exposed_ports.iter().flatten().enumerate() {
        check_port(&format!("{path}.exposed_ports[{i}]"), p)?;
    }
    if let Some(labels) = &o.labels {
        if labels.len() > MAX_OCI_ITEMS {
            return Err(bad(
                &format!("{path}.labels"),
                format!("{} labels; at most {MAX_OCI_ITEMS}", labels.len()),
            ));
        }
        for (k, v) in labels {
            let field = format!("{path}.labels.{k}");
            if k.is_empty()
                || k.len() > 256
                || !k
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-/".contains(&b))
            {
                return Err(bad(
                    &format!("{path}.labels"),
                    format!("label {k:?}: a name is letters, digits and . _ - / (at most 256)"),
                ));
            }
            check_text(&field, v, 4096)?;
        }
    }
    if let Some(w) = &o.working_dir {
        check_container_dir(&format!("{path}.working_dir"), w)?;
    }
    at_most(
        &format!("{path}.volumes"),
        &o.volumes,
        MAX_OCI_ITEMS,
        "volumes",
    )?;
    for (i, v) in o.volumes.iter().flatten().enumerate() {
        check_path(&format!("{path}.volumes[{i}]"), v)?;
    }
    if let Some(s) = &o.stop_signal {
        let name = s.strip_prefix("SIG").unwrap_or(s);
        let valid = !name.is_empty()
            && name.len() <= 16
            && (name.bytes().all(|b| b.is_ascii_digit())
                || name.bytes().all(|b| {
                    b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'+' || b == b'-'
                }));
        if !valid {
            return Err(bad(
                &format!("{path}.stop_signal"),
                format!("{s:?} is not a signal such as SIGTERM or 15"),
            ));
        }
    }
    Ok(())
}

/// Refuses `customizations.oci` (at `path`) for a compose without an
/// `oci` image: nothing would carry it.
pub fn check_oci_applies(path: &str, oci: Option<&OciConfig>, has_oci_image: bool) -> Check {
    if oci.is_some() && !has_oci_image {
        return Err(bad(
            path,
            "a container configuration is for oci images, and this compose builds none",
        ));
    }
    Ok(())
}

/// What both spellings of a user share: name, groups, SSH key, password hash.
fn check_account(
    path: &str,
    name: &str,
    groups: &Option<Vec<String>>,
    key: &Option<String>,
    password: &Option<String>,
) -> Check {
    check_account_name(&format!("{path}.name"), name)?;
    for (i, g) in groups.iter().flatten().enumerate() {
        check_account_name(&format!("{path}.groups[{i}]"), g)?;
    }
    check_present(path, "key", key.as_deref(), check_ssh_key)?;
    check_present(path, "password", password.as_deref(), check_password_hash)
}

fn check_user(path: &str, u: &User) -> Check {
    check_account(path, &u.name, &u.groups, &u.key, &u.password)
}

fn check_blueprint_user(path: &str, u: &BlueprintUser) -> Check {
    check_account(path, &u.name, &u.groups, &u.key, &u.password)?;
    check_present(path, "home", u.home.as_deref(), check_path)?;
    check_present(path, "shell", u.shell.as_deref(), check_path)?;
    if let Some(d) = &u.description {
        check_text(&format!("{path}.description"), d, 256)?;
        if d.contains(':') {
            return Err(bad(&format!("{path}.description"), "must not contain ':'"));
        }
    }
    Ok(())
}

/// [`Shared`] of either spelling: the two types name these fields alike.
macro_rules! shared {
    ($c:expr) => {
        Shared {
            hostname: &$c.hostname,
            kernel: &$c.kernel,
            timezone: &$c.timezone,
            locale: &$c.locale,
            services: &$c.services,
            files: &$c.files,
            directories: &$c.directories,
            cloud_init: &$c.cloud_init,
            oci: &$c.oci,
        }
    };
}

/// Most packages one list of a request may name (a blueprint's `packages`
/// and `modules`, `customizations.packages`): each is a solver goal.
pub const MAX_PACKAGES: usize = 1000;
/// Most repositories one request may name: each is a set of fetches.
pub const MAX_REPOSITORIES: usize = 16;

fn at_most<T>(path: &str, list: &Option<Vec<T>>, max: usize, what: &str) -> Check {
    match list {
        Some(l) if l.len() > max => Err(bad(
            path,
            format!("{} {what} named; at most {max}", l.len()),
        )),
        _ => Ok(()),
    }
}

/// Checks the Cloud API `customizations` object found at `path`.
pub fn validate_customizations(c: &Customizations, path: &str, family: Family) -> Check {
    at_most(
        &format!("{path}.packages"),
        &c.packages,
        MAX_PACKAGES,
        "packages",
    )?;
    at_most(
        &format!("{path}.payload_repositories"),
        &c.payload_repositories,
        MAX_REPOSITORIES,
        "repositories",
    )?;
    for (i, p) in c.packages.iter().flatten().enumerate() {
        check_package_name(&format!("{path}.packages[{i}]"), p)?;
    }
    for (i, u) in c.users.iter().flatten().enumerate() {
        check_user(&format!("{path}.users[{i}]"), u)?;
    }
    for (i, g) in c.groups.iter().flatten().enumerate() {
        check_account_name(&format!("{path}.groups[{i}].name"), &g.name)?;
    }
    shared!(c).check(path)?;
    for (i, r) in c.payload_repositories.iter().flatten().enumerate() {
        validate_repository(r, &format!("{path}.payload_repositories[{i}]"), family)?;
    }
    for (i, fs) in c.filesystem.iter().flatten().enumerate() {
        check_mountpoint(
            &format!("{path}.filesystem[{i}].mountpoint"),
            &fs.mountpoint,
        )?;
    }
    Ok(())
}

/// The customizations both spellings (Cloud API and blueprint) share, under
/// the same names.
struct Shared<'a> {
    hostname: &'a Option<String>,
    kernel: &'a Option<Kernel>,
    timezone: &'a Option<Timezone>,
    locale: &'a Option<Locale>,
    services: &'a Option<Services>,
    files: &'a Option<Vec<File>>,
    directories: &'a Option<Vec<Directory>>,
    cloud_init: &'a Option<CloudInit>,
    oci: &'a Option<OciConfig>,
}

impl Shared<'_> {
    fn check(&self, path: &str) -> Check {
        check_present(path, "hostname", self.hostname.as_deref(), check_hostname)?;
        check_present(path, "kernel", self.kernel.as_ref(), check_kernel)?;
        check_present(path, "timezone", self.timezone.as_ref(), check_timezone)?;
        check_present(path, "locale", self.locale.as_ref(), check_locale)?;
        check_present(path, "services", self.services.as_ref(), check_services)?;
        for (i, f) in self.files.iter().flatten().enumerate() {
            check_file(&format!("{path}.files[{i}]"), f)?;
        }
        for (i, d) in self.directories.iter().flatten().enumerate() {
            check_directory(&format!("{path}.directories[{i}]"), d)?;
        }
        if let Some(ci) = self.cloud_init {
            check_datasource(&format!("{path}.cloud_init.datasource"), &ci.datasource)?;
        }
        check_present(path, "oci", self.oci.as_ref(), check_oci)?;
        Ok(())
    }
}

fn check_mountpoint(field: &str, mp: &str) -> Check {
    if mp == "/" {
        return Ok(());
    }
    check_path(field, mp)
}

/// Checks a blueprint found at `path`.
pub fn validate_blueprint(b: &Blueprint, path: &str, family: Family) -> Check {
    check_text(&format!("{path}.name"), &b.name, 256)?;
    if b.name.is_empty() {
        return Err(bad(&format!("{path}.name"), "blueprint name is empty"));
    }
    for (list, name) in [(&b.packages, "packages"), (&b.modules, "modules")] {
        at_most(&format!("{path}.{name}"), list, MAX_PACKAGES, name)?;
        for (i, p) in list.iter().flatten().enumerate() {
            check_package_name(&format!("{path}.{name}[{i}].name"), &p.name)?;
            if let Some(v) = &p.version {
                check_text(&format!("{path}.{name}[{i}].version"), v, 256)?;
            }
        }
    }
    if family == Family::Debian && b.groups.as_ref().is_some_and(|g| !g.is_empty()) {
        return Err(bad(
            &format!("{path}.groups"),
            "package groups do not exist in Debian distributions",
        ));
    }
    let Some(c) = &b.customizations else {
        return Ok(());
    };
    let path = format!("{path}.customizations");
    for (i, k) in c.sshkey.iter().flatten().enumerate() {
        check_account_name(&format!("{path}.sshkey[{i}].user"), &k.user)?;
        check_ssh_key(&format!("{path}.sshkey[{i}].key"), &k.key)?;
    }
    for (i, u) in c.user.iter().flatten().enumerate() {
        check_blueprint_user(&format!("{path}.user[{i}]"), u)?;
    }
    for (i, g) in c.group.iter().flatten().enumerate() {
        check_account_name(&format!("{path}.group[{i}].name"), &g.name)?;
    }
    for (i, fs) in c.filesystem.iter().flatten().enumerate() {
        check_mountpoint(
            &format!("{path}.filesystem[{i}].mountpoint"),
            &fs.mountpoint,
        )?;
        parse_size(&fs.minsize).map_err(|m| bad(&format!("{path}.filesystem[{i}].minsize"), m))?;
    }
    shared!(c).check(&path)
}

/// A size: a byte count, or a string with a unit (`"2 GiB"`, `"500MB"`).
pub fn parse_size(v: &Value) -> Result<u64, String> {
    match v {
        Value::Number(n) => n
            .as_u64()
            .ok_or_else(|| format!("{n} is not a size in bytes")),
        Value::String(s) => {
            let s = s.trim();
            let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
            let (num, unit) = s.split_at(split);
            let n: u64 = num
                .parse()
                .map_err(|_| format!("{s:?} is not a size such as \"2 GiB\""))?;
            let mult: u64 = match unit.trim() {
                "" | "B" => 1,
                "kB" | "KB" => 1000,
                "KiB" => 1 << 10,
                "MB" => 1_000_000,
                "MiB" => 1 << 20,
                "GB" => 1_000_000_000,
                "GiB" => 1 << 30,
                "TB" => 1_000_000_000_000,
                "TiB" => 1 << 40,
                other => {
                    return Err(format!(
                        "unknown size unit {other:?} (use B, KiB, MiB, GiB, TiB, kB, MB, GB, TB)"
                    ))
                }
            };
            n.checked_mul(mult)
                .ok_or_else(|| format!("{s:?} is too large"))
        }
        _ => Err("must be a number of bytes or a string such as \"2 GiB\"".into()),
    }
}

fn check_url(field: &str, url: &str) -> Result<(), FieldError> {
    let ok = ["http://", "https://", "file:///"]
        .iter()
        .any(|p| url.starts_with(p))
        && !url.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok {
        Ok(())
    } else {
        Err(FieldError::new(
            ErrorKind::InvalidRepository,
            field,
            format!("{url:?} is not an http://, https:// or file:/// URL"),
        ))
    }
}

/// Checks a repository found at `path`.
pub fn validate_repository(r: &Repository, path: &str, family: Family) -> Check {
    let repo_err = |f: &str, m: String| {
        FieldError::new(ErrorKind::InvalidRepository, format!("{path}.{f}"), m)
    };
    let refused = |fields: &[(bool, &str, &str)]| match fields.iter().find(|f| f.0) {
        Some((_, field, reason)) => Err(repo_err(field, (*reason).into())),
        None => Ok(()),
    };
    refused(&[
        (
            r.mirrorlist.is_some(),
            "mirrorlist",
            "mirror lists are not supported; give baseurl",
        ),
        (
            r.metalink.is_some(),
            "metalink",
            "metalinks are not supported; give baseurl",
        ),
        (
            r.rhsm == Some(true),
            "rhsm",
            "subscription-managed repositories are not supported",
        ),
    ])?;
    let Some(url) = &r.baseurl else {
        return Err(repo_err("baseurl", "a repository needs a baseurl".into()));
    };
    check_url(&format!("{path}.baseurl"), url)?;
    match family {
        Family::Debian => {
            let Some(suite) = &r.suite else {
                return Err(repo_err(
                    "suite",
                    "a Debian repository needs a suite (e.g. bookworm)".into(),
                ));
            };
            if suite.is_empty()
                || !suite
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
                || suite.contains("..")
            {
                return Err(repo_err("suite", format!("{suite:?} is not a suite name")));
            }
            let comps = r.components.as_deref().unwrap_or_default();
            if comps.is_empty() {
                return Err(repo_err(
                    "components",
                    "a Debian repository needs components (e.g. [\"main\"])".into(),
                ));
            }
            for (i, c) in comps.iter().enumerate() {
                if c.is_empty()
                    || !c
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '/'))
                    || c.contains("..")
                {
                    return Err(repo_err(
                        &format!("components[{i}]"),
                        format!("{c:?} is not a component name"),
                    ));
                }
            }
        }
        Family::Rpm => refused(&[
            (
                r.suite.is_some(),
                "suite",
                "suites are for Debian repositories",
            ),
            (
                r.components.is_some(),
                "components",
                "components are for Debian repositories",
            ),
        ])?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths() {
        for ok in ["/etc/motd", "/var/lib/x", "/opt/a.b/c"] {
            check_path("f", ok).unwrap();
        }
        for bad in [
            "etc/motd",
            "/",
            "/etc/../shadow",
            "/etc//x",
            "/etc/",
            "/proc/1",
            "/sys",
            "/dev/sda",
            "/a/./b",
            "/a\nb",
            "",
        ] {
            assert!(check_path("f", bad).is_err(), "{bad:?} accepted");
        }
        // Only the directory itself, not a name that begins alike.
        check_path("f", "/devices.txt").unwrap();
    }

    #[test]
    fn container_configurations() {
        let ok: OciConfig = serde_json::from_value(json!({
            "entrypoint": ["/usr/bin/kiln-composer"], "cmd": ["--config", "/etc/kiln/composer.toml"],
            "env": ["RUST_LOG=info", "_X="], "user": "kiln-composer:kiln-composer",
            "exposed_ports": ["8700", "8701/tcp", "53/udp", "9/sctp", "65535"],
            "labels": {"org.opencontainers.image.title": "kiln composer", "a/b-c_d": ""},
            "working_dir": "/", "volumes": ["/var/lib/kiln-composer"], "stop_signal": "SIGTERM",
        }))
        .unwrap();
        check_oci("c.oci", &ok).unwrap();
        for (bad, field) in [
            (json!({"entrypoint": []}), "c.oci.entrypoint"),
            (json!({"entrypoint": [""]}), "c.oci.entrypoint"),
            (json!({"cmd": ["a\nb"]}), "c.oci.cmd[0]"),
            (json!({"env": ["1X=a"]}), "c.oci.env[0]"),
            (json!({"env": ["NOVALUE"]}), "c.oci.env[0]"),
            (json!({"env": ["A-B=c"]}), "c.oci.env[0]"),
            (json!({"user": "a b"}), "c.oci.user"),
            (json!({"user": "a:"}), "c.oci.user"),
            (json!({"user": "-x"}), "c.oci.user"),
            (json!({"exposed_ports": ["0"]}), "c.oci.exposed_ports[0]"),
            (
                json!({"exposed_ports": ["80", "65536"]}),
                "c.oci.exposed_ports[1]",
            ),
            (
                json!({"exposed_ports": ["80/icmp"]}),
                "c.oci.exposed_ports[0]",
            ),
            (json!({"exposed_ports": ["+80"]}), "c.oci.exposed_ports[0]"),
            (json!({"labels": {"a b": "c"}}), "c.oci.labels"),
            (json!({"labels": {"a": "c\u{7}"}}), "c.oci.labels.a"),
            (json!({"working_dir": "relative"}), "c.oci.working_dir"),
            (json!({"volumes": ["/proc/x"]}), "c.oci.volumes[0]"),
            (json!({"stop_signal": "TERM now"}), "c.oci.stop_signal"),
        ] {
            let o: OciConfig = serde_json::from_value(bad.clone()).unwrap();
            let e = check_oci("c.oci", &o).expect_err(&bad.to_string());
            assert_eq!(e.field, field, "{bad}");
        }
        assert!(check_oci_applies("c.oci", Some(&ok), false).is_err());
        check_oci_applies("c.oci", Some(&ok), true).unwrap();
        check_oci_applies("c.oci", None, false).unwrap();
    }

    #[test]
    fn names() {
        check_account_name("f", "admin").unwrap();
        check_account_name("f", "_svc-1").unwrap();
        for bad in [
            "",
            "Root",
            "1abc",
            "a b",
            "a:b",
            "averyveryveryveryveryveryverylongname",
        ] {
            assert!(check_account_name("f", bad).is_err(), "{bad:?} accepted");
        }
        check_hostname("f", "node-001.cluster").unwrap();
        assert!(check_hostname("f", "-bad").is_err());
        assert!(check_hostname("f", "a..b").is_err());
        check_unit_name("f", "sshd").unwrap();
        check_unit_name("f", "getty@tty1.service").unwrap();
        assert!(check_unit_name("f", "../x.service").is_err());
        assert!(check_unit_name("f", "x.exe").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size(&json!(1024)), Ok(1024));
        assert_eq!(parse_size(&json!("2 GiB")), Ok(2 << 30));
        assert_eq!(parse_size(&json!("500MB")), Ok(500_000_000));
        assert!(parse_size(&json!("2 parsecs")).is_err());
        assert!(parse_size(&json!(-1)).is_err());
    }

    #[test]
    fn modes() {
        check_mode("f", "0644").unwrap();
        check_mode("f", "755").unwrap();
        check_mode("f", "01777").unwrap();
        assert!(check_mode("f", "0999").is_err());
        assert!(check_mode("f", "rw-r--r--").is_err());
    }
}
