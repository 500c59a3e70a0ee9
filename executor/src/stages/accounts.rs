//! Users and groups, added with the build root's `useradd`/`groupadd
//! --root`, which edit the tree's databases the way the distribution does.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use serde::Deserialize;
use serde_json::Value;

use super::files::{lookup_id, Id};
use super::{Ctx, Stage, TREE};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct GroupsOptions {
    #[serde(default)]
    groups: BTreeMap<String, Group>,
    #[serde(default)]
    force: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Group {
    gid: Option<u32>,
}

fn exists(ctx: &Ctx, db: &str, name: &str) -> bool {
    lookup_id(ctx, db, &Id::Name(name.to_owned())).is_ok()
}

pub(super) struct Groups;

impl Stage for Groups {
    const NAME: &'static str = "org.osbuild.groups";
    type Options = GroupsOptions;

    fn run(ctx: &Ctx, o: GroupsOptions) -> Result<Value, String> {
        for (name, g) in o.groups {
            if o.force && exists(ctx, "/etc/group", &name) {
                continue;
            }
            let mut c = Command::new("groupadd");
            c.args(["--root", TREE]);
            if let Some(gid) = g.gid {
                c.arg("--gid").arg(gid.to_string());
                if o.force {
                    c.arg("--non-unique");
                }
            }
            ctx.run(c.arg("--").arg(&name))?;
        }
        Ok(Value::Null)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UsersOptions {
    #[serde(default)]
    users: BTreeMap<String, User>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct User {
    uid: Option<u32>,
    gid: Option<u32>,
    #[serde(default)]
    groups: Vec<String>,
    description: Option<String>,
    home: Option<String>,
    shell: Option<String>,
    password: Option<String>,
    key: Option<String>,
    #[serde(default)]
    keys: Vec<String>,
    expiredate: Option<i64>,
    force_password_reset: Option<bool>,
}

pub(super) struct Users;

impl Stage for Users {
    const NAME: &'static str = "org.osbuild.users";
    type Options = UsersOptions;

    fn run(ctx: &Ctx, o: UsersOptions) -> Result<Value, String> {
        for (name, u) in o.users {
            let existing = exists(ctx, "/etc/passwd", &name);
            let mut c = Command::new(if existing { "usermod" } else { "useradd" });
            c.args(["--root", TREE]);
            if !existing {
                c.arg("--create-home");
            }
            if let Some(uid) = u.uid {
                c.arg("--uid").arg(uid.to_string());
            }
            if let Some(gid) = u.gid {
                c.arg("--gid").arg(gid.to_string());
            }
            if !u.groups.is_empty() {
                c.arg("--groups").arg(u.groups.join(","));
            }
            if let Some(d) = &u.description {
                c.arg("--comment").arg(d);
            }
            if let Some(h) = &u.home {
                c.arg("--home").arg(h);
            }
            if let Some(s) = &u.shell {
                c.arg("--shell").arg(s);
            }
            if let Some(p) = &u.password {
                c.arg("--password").arg(p);
            }
            if let Some(e) = u.expiredate {
                // Days since the epoch, as shadow(5) stores it.
                c.arg("--expiredate").arg(e.to_string());
            }
            ctx.run(c.arg("--").arg(&name))?;
            if u.force_password_reset == Some(true) {
                ctx.run(
                    Command::new("chage")
                        .args(["--root", TREE, "--lastday", "0", "--"])
                        .arg(&name),
                )?;
            }
            let mut keys: Vec<&String> = u.key.iter().collect();
            keys.extend(u.keys.iter());
            if !keys.is_empty() {
                authorize(ctx, &name, &keys)?;
            }
        }
        Ok(Value::Null)
    }
}

/// Writes `~/.ssh/authorized_keys`, owned by the user, as sshd requires.
fn authorize(ctx: &Ctx, name: &str, keys: &[&String]) -> Result<(), String> {
    let passwd = ctx.in_tree("/etc/passwd");
    let text = fs::read_to_string(&passwd).map_err(|e| format!("{}: {e}", passwd.display()))?;
    let fields: Vec<&str> = text
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.first() == Some(&name))
        .ok_or_else(|| format!("user {name:?} is missing from /etc/passwd after useradd"))?;
    let (uid, gid, home) = match fields.as_slice() {
        [_, _, uid, gid, _, home, ..] => (
            uid.parse::<u32>().map_err(|e| e.to_string())?,
            gid.parse::<u32>().map_err(|e| e.to_string())?,
            *home,
        ),
        _ => return Err(format!("malformed /etc/passwd entry for {name:?}")),
    };
    let ssh = ctx.in_tree(home).join(".ssh");
    fs::create_dir_all(&ssh).map_err(|e| format!("{}: {e}", ssh.display()))?;
    let file = ssh.join("authorized_keys");
    let content: String = keys.iter().map(|k| format!("{}\n", k.trim_end())).collect();
    fs::write(&file, content).map_err(|e| format!("{}: {e}", file.display()))?;
    fs::set_permissions(&ssh, fs::Permissions::from_mode(0o700)).map_err(|e| e.to_string())?;
    fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).map_err(|e| e.to_string())?;
    for p in [&ssh, &file] {
        std::os::unix::fs::lchown(p, Some(uid), Some(gid))
            .map_err(|e| format!("{}: {e}", p.display()))?;
    }
    Ok(())
}
