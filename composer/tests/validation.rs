//! Malformed requests: each gets a 4xx in the one error shape, naming the
//! field at fault, and leaves the database as it was.

mod common;

use common::{pxe_request, start, Backend, TestComposer};
use serde_json::{json, Value};

struct Case {
    name: &'static str,
    body: Body,
    status: u16,
    /// Error id (`IMAGE-BUILDER-COMPOSER-<id>`).
    code: u32,
    field: Option<&'static str>,
}

enum Body {
    Json(Value),
    Raw(&'static str, String),
    Channel(&'static str, Value),
}

fn with(path: &[&str], value: Value) -> Value {
    let mut req = pxe_request();
    let mut cur = &mut req;
    for (i, key) in path.iter().enumerate() {
        if i == path.len() - 1 {
            cur[*key] = value.clone();
        } else {
            if cur.get(*key).is_none() {
                cur[*key] = json!({});
            }
            cur = &mut cur[*key];
        }
    }
    req
}

fn custom(key: &str, value: Value) -> Value {
    with(&["customizations", key], value)
}

/// `customizations.oci` of an `oci` compose.
fn oci_custom(value: Value) -> Value {
    let mut r = custom("oci", value);
    r["image_request"]["image_type"] = json!("oci");
    r
}

fn image(key: &str, value: Value) -> Value {
    with(&["image_request", key], value)
}

fn blueprint(b: Value) -> Value {
    let mut req = pxe_request();
    req.as_object_mut().unwrap().remove("customizations");
    req["blueprint"] = b;
    req
}

fn cases() -> Vec<Case> {
    use Body::*;
    let ok_image = pxe_request()["image_request"].clone();
    let mut many = pxe_request();
    many.as_object_mut().unwrap().remove("image_request");
    many["image_requests"] = Value::Array(vec![ok_image.clone(); 17]);
    let mut second_bad = pxe_request();
    second_bad.as_object_mut().unwrap().remove("image_request");
    let mut bad_arch = ok_image.clone();
    bad_arch["architecture"] = json!("s390x");
    second_bad["image_requests"] = json!([ok_image.clone(), bad_arch]);
    let mut both = pxe_request();
    both["image_requests"] = json!([ok_image.clone()]);
    let mut none = pxe_request();
    none.as_object_mut().unwrap().remove("image_request");
    let mut empty = none.clone();
    empty["image_requests"] = json!([]);
    let mut cust_and_bp = pxe_request();
    cust_and_bp["blueprint"] = json!({"name": "x"});
    let mut no_type = pxe_request();
    no_type["image_request"]
        .as_object_mut()
        .unwrap()
        .remove("image_type");
    let mut no_distro = pxe_request();
    no_distro.as_object_mut().unwrap().remove("distribution");
    let user = |u: Value| custom("users", json!([u]));
    let file = |f: Value| custom("files", json!([f]));
    let repo = |r: Value| image("repositories", json!([r]));
    let target = |t: Value| image("upload_targets", json!([t]));
    let big = format!("{{\"distribution\": \"{}\"}}", "x".repeat(70 * 1024));

    vec![
        Case {
            name: "not JSON",
            body: Raw("application/json", "{\"distribution\":".into()),
            status: 400,
            code: 1,
            field: None,
        },
        Case {
            name: "trailing garbage",
            body: Raw("application/json", format!("{} x", pxe_request())),
            status: 400,
            code: 1,
            field: None,
        },
        Case {
            name: "wrong media type",
            body: Raw("text/plain", pxe_request().to_string()),
            status: 415,
            code: 5,
            field: None,
        },
        Case {
            name: "oversized body",
            body: Raw("application/json", big),
            status: 413,
            code: 4,
            field: None,
        },
        Case {
            name: "array body",
            body: Json(json!([])),
            status: 400,
            code: 3,
            field: Some(""),
        },
        Case {
            name: "unknown top-level field",
            body: Json(with(&["colour"], json!("red"))),
            status: 400,
            code: 2,
            field: Some("colour"),
        },
        Case {
            name: "unknown image field",
            body: Json(image("image_typ", json!("pxe"))),
            status: 400,
            code: 2,
            field: Some("image_request.image_typ"),
        },
        Case {
            name: "unknown customization",
            body: Json(custom("firewall", json!({}))),
            status: 400,
            code: 2,
            field: Some("customizations.firewall"),
        },
        Case {
            name: "missing distribution",
            body: Json(no_distro),
            status: 400,
            code: 3,
            field: Some("distribution"),
        },
        Case {
            name: "distribution of wrong type",
            body: Json(with(&["distribution"], json!(12))),
            status: 400,
            code: 3,
            field: Some("distribution"),
        },
        Case {
            name: "unknown distribution",
            body: Json(with(&["distribution"], json!("debian-99"))),
            status: 400,
            code: 6,
            field: Some("distribution"),
        },
        Case {
            name: "no image request",
            body: Json(none),
            status: 400,
            code: 3,
            field: Some("image_request"),
        },
        Case {
            name: "both image request forms",
            body: Json(both),
            status: 400,
            code: 3,
            field: Some("image_requests"),
        },
        Case {
            name: "empty image requests",
            body: Json(empty),
            status: 400,
            code: 3,
            field: Some("image_requests"),
        },
        Case {
            name: "too many images",
            body: Json(many),
            status: 400,
            code: 3,
            field: Some("image_requests"),
        },
        Case {
            name: "too many upload targets",
            body: Json(image(
                "upload_targets",
                Value::Array(vec![json!({"type": "local", "upload_options": {}}); 9]),
            )),
            status: 400,
            code: 3,
            field: Some("image_request.upload_targets"),
        },
        Case {
            name: "too many repositories",
            body: Json(image(
                "repositories",
                Value::Array(vec![
                    json!({"baseurl": "http://deb.debian.org/debian", "suite": "bookworm", "components": ["main"]});
                    17
                ]),
            )),
            status: 400,
            code: 3,
            field: Some("image_request.repositories"),
        },
        Case {
            name: "too many packages",
            body: Json(custom(
                "packages",
                Value::Array((0..1001).map(|i| json!(format!("p{i}"))).collect()),
            )),
            status: 400,
            code: 9,
            field: Some("customizations.packages"),
        },
        Case {
            name: "too many blueprint packages",
            body: Json(blueprint(json!({
                "name": "n",
                "packages": (0..1001).map(|i| json!({"name": format!("p{i}")})).collect::<Vec<_>>(),
            }))),
            status: 400,
            code: 9,
            field: Some("blueprint.packages"),
        },
        Case {
            name: "unknown architecture",
            body: Json(image("architecture", json!("riscv64"))),
            status: 400,
            code: 7,
            field: Some("image_request.architecture"),
        },
        Case {
            name: "unknown image type",
            body: Json(image("image_type", json!("iso"))),
            status: 400,
            code: 8,
            field: Some("image_request.image_type"),
        },
        Case {
            name: "missing image type",
            body: Json(no_type),
            status: 400,
            code: 3,
            field: Some("image_request.image_type"),
        },
        Case {
            name: "bad second image",
            body: Json(second_bad),
            status: 400,
            code: 7,
            field: Some("image_requests[1].architecture"),
        },
        Case {
            name: "negative size",
            body: Json(image("size", json!(-1))),
            status: 400,
            code: 3,
            field: Some("image_request.size"),
        },
        Case {
            name: "customizations and blueprint",
            body: Json(cust_and_bp),
            status: 400,
            code: 3,
            field: Some("blueprint"),
        },
        Case {
            name: "bad hostname",
            body: Json(custom("hostname", json!("-bad-"))),
            status: 400,
            code: 9,
            field: Some("customizations.hostname"),
        },
        Case {
            name: "bad user name",
            body: Json(user(json!({"name": "Root"}))),
            status: 400,
            code: 9,
            field: Some("customizations.users[0].name"),
        },
        Case {
            name: "plain-text password",
            body: Json(user(json!({"name": "admin", "password": "hunter2"}))),
            status: 400,
            code: 9,
            field: Some("customizations.users[0].password"),
        },
        Case {
            name: "bad SSH key",
            body: Json(user(json!({"name": "admin", "key": "not a key"}))),
            status: 400,
            code: 9,
            field: Some("customizations.users[0].key"),
        },
        Case {
            name: "bad group of a user",
            body: Json(user(
                json!({"name": "admin", "groups": ["wheel", "Bad Group"]}),
            )),
            status: 400,
            code: 9,
            field: Some("customizations.users[0].groups[1]"),
        },
        Case {
            name: "path traversal",
            body: Json(file(json!({"path": "/etc/../shadow", "data": "x"}))),
            status: 400,
            code: 9,
            field: Some("customizations.files[0].path"),
        },
        Case {
            name: "file under /proc",
            body: Json(file(json!({"path": "/proc/sys/kernel/x"}))),
            status: 400,
            code: 9,
            field: Some("customizations.files[0].path"),
        },
        Case {
            name: "device directory",
            body: Json(custom("directories", json!([{"path": "/dev/sda"}]))),
            status: 400,
            code: 9,
            field: Some("customizations.directories[0].path"),
        },
        Case {
            name: "relative path",
            body: Json(file(json!({"path": "etc/motd"}))),
            status: 400,
            code: 9,
            field: Some("customizations.files[0].path"),
        },
        Case {
            name: "bad file mode",
            body: Json(file(json!({"path": "/etc/motd", "mode": "0999"}))),
            status: 400,
            code: 9,
            field: Some("customizations.files[0].mode"),
        },
        Case {
            name: "bad file owner",
            body: Json(file(json!({"path": "/etc/motd", "user": -5}))),
            status: 400,
            code: 9,
            field: Some("customizations.files[0].user"),
        },
        Case {
            name: "service name with a path",
            body: Json(custom("services", json!({"enabled": ["../../evil"]}))),
            status: 400,
            code: 9,
            field: Some("customizations.services.enabled[0]"),
        },
        Case {
            name: "service enabled and masked",
            body: Json(custom(
                "services",
                json!({"enabled": ["sshd"], "masked": ["sshd"]}),
            )),
            status: 400,
            code: 9,
            field: Some("customizations.services.masked[0]"),
        },
        Case {
            name: "unknown unit type",
            body: Json(custom("services", json!({"disabled": ["foo.exe"]}))),
            status: 400,
            code: 9,
            field: Some("customizations.services.disabled[0]"),
        },
        Case {
            name: "services of wrong type",
            body: Json(custom("services", json!("sshd"))),
            status: 400,
            code: 3,
            field: Some("customizations.services"),
        },
        Case {
            name: "bad time zone",
            body: Json(custom("timezone", json!({"timezone": "../../etc/passwd"}))),
            status: 400,
            code: 9,
            field: Some("customizations.timezone.timezone"),
        },
        Case {
            name: "bad locale",
            body: Json(custom("locale", json!({"languages": ["en US"]}))),
            status: 400,
            code: 9,
            field: Some("customizations.locale.languages[0]"),
        },
        Case {
            name: "bad package name",
            body: Json(custom("packages", json!(["vim", "foo;rm -rf /"]))),
            status: 400,
            code: 9,
            field: Some("customizations.packages[1]"),
        },
        Case {
            name: "kernel append with newline",
            body: Json(custom("kernel", json!({"append": "quiet\ninit=/bin/sh"}))),
            status: 400,
            code: 9,
            field: Some("customizations.kernel.append"),
        },
        Case {
            name: "file system under /proc",
            body: Json(custom(
                "filesystem",
                json!([{"mountpoint": "/proc", "min_size": 1}]),
            )),
            status: 400,
            code: 9,
            field: Some("customizations.filesystem[0].mountpoint"),
        },
        Case {
            name: "datasource with spaces",
            body: Json(custom("cloud_init", json!({"datasource": "nocloud net"}))),
            status: 400,
            code: 9,
            field: Some("customizations.cloud_init.datasource"),
        },
        Case {
            name: "container configuration for a pxe image",
            body: Json(custom(
                "oci",
                json!({"entrypoint": ["/usr/bin/kiln-composer"]}),
            )),
            status: 400,
            code: 9,
            field: Some("customizations.oci"),
        },
        Case {
            name: "container configuration in a pxe blueprint",
            body: Json(blueprint(
                json!({"name": "bp", "customizations": {"oci": {"user": "kiln"}}}),
            )),
            status: 400,
            code: 9,
            field: Some("blueprint.customizations.oci"),
        },
        Case {
            name: "container port out of range",
            body: Json(oci_custom(json!({"exposed_ports": ["8700/tcp", "70000"]}))),
            status: 400,
            code: 9,
            field: Some("customizations.oci.exposed_ports[1]"),
        },
        Case {
            name: "container environment without a name",
            body: Json(oci_custom(json!({"env": ["=x"]}))),
            status: 400,
            code: 9,
            field: Some("customizations.oci.env[0]"),
        },
        Case {
            name: "unknown container configuration key",
            body: Json(oci_custom(json!({"Entrypoint": ["/bin/x"]}))),
            status: 400,
            code: 2,
            field: Some("customizations.oci.Entrypoint"),
        },
        Case {
            name: "repository without baseurl",
            body: Json(repo(json!({"suite": "bookworm", "components": ["main"]}))),
            status: 400,
            code: 10,
            field: Some("image_request.repositories[0].baseurl"),
        },
        Case {
            name: "Debian repository without suite",
            body: Json(repo(
                json!({"baseurl": "http://127.0.0.1/debian", "components": ["main"]}),
            )),
            status: 400,
            code: 10,
            field: Some("image_request.repositories[0].suite"),
        },
        Case {
            name: "repository over ftp",
            body: Json(repo(
                json!({"baseurl": "ftp://mirror/debian", "suite": "bookworm", "components": ["main"]}),
            )),
            status: 400,
            code: 10,
            field: Some("image_request.repositories[0].baseurl"),
        },
        Case {
            name: "mirror list",
            body: Json(repo(json!({"mirrorlist": "http://x/list"}))),
            status: 400,
            code: 10,
            field: Some("image_request.repositories[0].mirrorlist"),
        },
        Case {
            name: "unknown target type",
            body: Json(target(json!({"type": "dropbox", "upload_options": {}}))),
            status: 400,
            code: 11,
            field: Some("image_request.upload_targets[0].type"),
        },
        Case {
            name: "S3 target without region",
            body: Json(target(json!({"type": "aws.s3", "upload_options": {}}))),
            status: 400,
            code: 11,
            field: Some("image_request.upload_targets[0].upload_options"),
        },
        Case {
            name: "credentials in a target",
            body: Json(target(
                json!({"type": "local", "upload_options": {"secret_key": "x"}}),
            )),
            status: 400,
            code: 11,
            field: Some("image_request.upload_targets[0].upload_options"),
        },
        Case {
            name: "boot target naming a non-node",
            body: Json(target(
                json!({"type": "boot", "upload_options": {"image_name": "compute", "nodes": {"xnames": ["Default"]}}}),
            )),
            status: 400,
            code: 11,
            field: Some("image_request.upload_targets[0].upload_options.nodes.xnames[0]"),
        },
        Case {
            name: "boot target naming nodes twice",
            body: Json(target(
                json!({"type": "boot", "upload_options": {"image_name": "compute", "nodes": {"group": "compute", "nids": [1]}}}),
            )),
            status: 400,
            code: 11,
            field: Some("image_request.upload_targets[0].upload_options.nodes"),
        },
        Case {
            name: "boot image name leaving its prefix",
            body: Json(target(
                json!({"type": "boot", "upload_options": {"image_name": "../x", "nodes": {"group": "compute"}}}),
            )),
            status: 400,
            code: 11,
            field: Some("image_request.upload_targets[0].upload_options.image_name"),
        },
        Case {
            name: "credentials in the local shorthand",
            body: Json(image("upload_options", json!({"secret_key": "x"}))),
            status: 400,
            code: 11,
            field: Some("image_request.upload_options"),
        },
        Case {
            name: "package groups on Debian",
            body: Json(blueprint(
                json!({"name": "n", "groups": [{"name": "core"}]}),
            )),
            status: 400,
            code: 9,
            field: Some("blueprint.groups"),
        },
        Case {
            name: "blueprint for another distro",
            body: Json(blueprint(json!({"name": "n", "distro": "rocky-9"}))),
            status: 400,
            code: 3,
            field: Some("blueprint.distro"),
        },
        Case {
            name: "blueprint size unit",
            body: Json(blueprint(
                json!({"name": "n", "customizations": {"filesystem": [{"mountpoint": "/var", "minsize": "2 parsecs"}]}}),
            )),
            status: 400,
            code: 9,
            field: Some("blueprint.customizations.filesystem[0].minsize"),
        },
        Case {
            name: "blueprint relative shell",
            body: Json(blueprint(
                json!({"name": "n", "customizations": {"user": [{"name": "a", "shell": "bash"}]}}),
            )),
            status: 400,
            code: 9,
            field: Some("blueprint.customizations.user[0].shell"),
        },
        Case {
            name: "blueprint SSH key for bad user",
            body: Json(blueprint(
                json!({"name": "n", "customizations": {"sshkey": [{"user": "a b", "key": "ssh-ed25519 AAAA"}]}}),
            )),
            status: 400,
            code: 9,
            field: Some("blueprint.customizations.sshkey[0].user"),
        },
        Case {
            // Without [auth] there is one tenant: naming another needs an admin's token.
            name: "another channel without the admin scope",
            body: Channel("team-a", pxe_request()),
            status: 403,
            code: 27,
            field: Some("X-Kiln-Channel"),
        },
    ]
}

async fn send(c: &TestComposer, body: &Body) -> reqwest::Response {
    let req = c.http.post(c.url("/compose"));
    match body {
        Body::Json(v) => req.json(v),
        Body::Raw(ct, s) => req.header("content-type", *ct).body(s.clone()),
        Body::Channel(ch, v) => req.header("X-Kiln-Channel", *ch).json(v),
    }
    .send()
    .await
    .unwrap()
}

fn check_error_shape(name: &str, body: &Value, status: u16, code: u32) {
    assert_eq!(body["kind"], "Error", "{name}: {body}");
    assert_eq!(body["id"], code.to_string(), "{name}: {body}");
    assert_eq!(
        body["code"],
        format!("IMAGE-BUILDER-COMPOSER-{code}"),
        "{name}: {body}"
    );
    assert_eq!(
        body["href"],
        format!("/api/image-builder-composer/v2/errors/{code}"),
        "{name}"
    );
    assert!(
        !body["reason"].as_str().unwrap_or("").is_empty(),
        "{name}: empty reason"
    );
    assert!(
        !body["operation_id"].as_str().unwrap_or("").is_empty(),
        "{name}: no operation id"
    );
    assert!((400..500).contains(&status), "{name}");
}

async fn table(b: Backend) {
    let c = start(b).await;
    let before = c.queue.row_counts().await.unwrap();
    let cases = cases();
    assert!(cases.len() >= 30);
    for case in &cases {
        let r = send(&c, &case.body).await;
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        assert_eq!(status, case.status, "{}: {body}", case.name);
        check_error_shape(case.name, &body, status, case.code);
        match case.field {
            Some(f) => {
                assert_eq!(body["details"]["field"], f, "{}: {body}", case.name);
                assert!(
                    body["reason"].as_str().unwrap().contains(f),
                    "{}: reason does not name {f}: {body}",
                    case.name
                );
            }
            None => assert!(body.get("details").is_none(), "{}: {body}", case.name),
        }
    }
    let after = c.queue.row_counts().await.unwrap();
    assert_eq!(before, after, "a rejected request wrote to the database");
    // The same server still accepts a good request.
    let r = send(&c, &Body::Json(pxe_request())).await;
    assert_eq!(r.status(), 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_sqlite() {
    table(Backend::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_postgres() {
    table(Backend::Postgres).await
}

#[tokio::test]
async fn bad_ids_routes_methods_and_queries() {
    let c = start(Backend::Sqlite).await;
    let (s, b) = c.get("/composes/not-a-uuid").await;
    assert_eq!(
        (s, b["details"]["field"].as_str()),
        (400, Some("id")),
        "{b}"
    );
    let (s, b) = c.get(&format!("/composes/{}", uuid::Uuid::new_v4())).await;
    assert_eq!(
        (s, b["code"].as_str()),
        (404, Some("IMAGE-BUILDER-COMPOSER-13")),
        "{b}"
    );
    let (s, b) = c
        .get(&format!("/composes/{}/events", uuid::Uuid::new_v4()))
        .await;
    assert_eq!(s, 404, "{b}");
    let (s, b) = c.get("/composes/?page=x").await;
    assert_eq!(
        (s, b["details"]["field"].as_str()),
        (400, Some("page")),
        "{b}"
    );
    let (s, b) = c.get("/composes/?colour=red").await;
    assert_eq!(
        (s, b["details"]["field"].as_str()),
        (400, Some("colour")),
        "{b}"
    );
    let (s, b) = c.get("/distributions/debian-99").await;
    assert_eq!(
        (s, b["details"]["field"].as_str()),
        (404, Some("distro")),
        "{b}"
    );
    let (s, b) = c.get("/no/such/thing").await;
    assert_eq!((s, b["kind"].as_str()), (404, Some("Error")), "{b}");
    let r = c
        .http
        .put(c.url("/compose"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["code"], "IMAGE-BUILDER-COMPOSER-19");
    let (s, b) = c.get("/errors/9").await;
    assert_eq!(
        (s, b["code"].as_str()),
        (200, Some("IMAGE-BUILDER-COMPOSER-9"))
    );
    let (s, _) = c.get("/errors/999999").await;
    assert_eq!(s, 404);
    let (s, b) = c.get("/errors?size=5").await;
    assert_eq!(s, 200);
    assert_eq!(b["items"].as_array().unwrap().len(), 5);
    assert!(b["total"].as_i64().unwrap() > 5);
}
