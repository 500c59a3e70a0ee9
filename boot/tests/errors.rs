//! Clear errors: bad xnames and MACs name their field, a missing or wrong
//! bearer token surfaces the service's 401, and the test doubles refuse
//! requests that do not match the OpenCHAMI swagger documents.

mod common;

use common::*;
use kiln_boot::{
    BootError, BootParams, BssClient, Deployer, ImageSource, NodeSelector, PublishRequest,
    ServiceConfig, SmdClient,
};
use serde_json::json;

#[test]
fn bad_xnames_and_macs_name_the_field() {
    let e = NodeSelector::xnames(&["x1000c0s0b0n0", "x1000c0s0b0"]).unwrap_err();
    assert!(matches!(e, BootError::InvalidXname { .. }));
    let text = e.to_string();
    assert!(
        text.starts_with("nodes.xnames[1]: \"x1000c0s0b0\""),
        "{text}"
    );
    let e = NodeSelector::macs(&["02:00:00:00:00:zz"]).unwrap_err();
    assert!(matches!(e, BootError::InvalidMac { .. }));
    assert!(
        e.to_string()
            .starts_with("nodes.macs[0]: \"02:00:00:00:00:zz\""),
        "{e}"
    );
}

#[tokio::test]
async fn missing_or_wrong_tokens_surface_as_401_errors() {
    let c = Cluster::start().await;
    let build = c.build("rocky9-compute", 10);
    let request = PublishRequest {
        image: ImageSource::Local(build),
        nodes: NodeSelector::xnames(&["x1000c0s0b0n0"]).unwrap(),
        extra_params: String::new(),
    };
    for bss_config in [
        ServiceConfig::new(c.bss.url()),
        ServiceConfig::new(c.bss.url()).with_token("not-the-token"),
    ] {
        let deployer = Deployer::new(
            store_at(&c.store_root()),
            BssClient::new(&bss_config).unwrap(),
            SmdClient::new(&ServiceConfig::new(c.smd.url()).with_token(SMD_TOKEN)).unwrap(),
        );
        let e = deployer.dry_run(&request).await.unwrap_err();
        let BootError::Unauthorized { status, .. } = &e else {
            panic!("{e:?}")
        };
        assert_eq!(*status, 401);
        let text = e.to_string();
        assert!(text.starts_with("BSS refused"), "{text}");
        assert!(text.contains("bss.token"), "{text}");
        assert!(
            !text.contains(BSS_TOKEN) && !text.contains("not-the-token"),
            "{text}"
        );
    }
    // SMD's token is checked the same way.
    let deployer = Deployer::new(
        store_at(&c.store_root()),
        BssClient::new(&ServiceConfig::new(c.bss.url()).with_token(BSS_TOKEN)).unwrap(),
        SmdClient::new(&ServiceConfig::new(c.smd.url())).unwrap(),
    );
    let e = deployer
        .show(&NodeSelector::group(GROUP).unwrap())
        .await
        .unwrap_err();
    assert!(
        e.to_string().starts_with("SMD refused") && e.to_string().contains("smd.token"),
        "{e}"
    );
    assert!(c.bss.entries().is_empty());
}

#[tokio::test]
async fn bss_refuses_malformed_hosts_and_macs_with_400() {
    let c = Cluster::start().await;
    let bss = BssClient::new(&ServiceConfig::new(c.bss.url()).with_token(BSS_TOKEN)).unwrap();
    let e = bss
        .put(&BootParams {
            hosts: vec!["node-17".into()],
            kernel: Some("http://k".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    let BootError::Status { status, detail, .. } = &e else {
        panic!("{e:?}")
    };
    assert_eq!(*status, 400);
    assert!(detail.contains("node-17"), "{detail}");
    let e = bss
        .put(&BootParams {
            macs: vec!["02:00:00:00:00".into()],
            kernel: Some("http://k".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("400") && e.to_string().contains("MAC"),
        "{e}"
    );
    // Well-formed MACs and NIDs are mapped to their nodes.
    bss.post(&BootParams {
        macs: vec!["02:00:00:00:00:02".into()],
        nids: vec![3],
        kernel: Some("http://k".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(
        c.bss.entries().keys().collect::<Vec<_>>(),
        ["x1000c0s0b0n1", "x1000c0s1b0n0"]
    );
    // POST refuses hosts that have parameters; PATCH keeps what it is not given.
    let e = bss
        .post(&BootParams {
            hosts: vec!["x1000c0s1b0n0".into()],
            kernel: Some("http://k2".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(e.to_string().contains("already exists"), "{e}");
    bss.patch(&BootParams {
        hosts: vec!["x1000c0s1b0n0".into()],
        params: Some("quiet".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    let entry = c.bss.entry("x1000c0s1b0n0").unwrap();
    assert_eq!(
        (entry.kernel.as_deref(), entry.params.as_deref()),
        (Some("http://k"), Some("quiet"))
    );
    let got = bss.get_all().await.unwrap();
    assert_eq!(got.len(), 2);
    c.bss.assert_no_violations();
}

#[tokio::test]
async fn the_doubles_refuse_requests_outside_the_swagger() {
    let c = Cluster::start().await;
    if !c.bss.checks_swagger() {
        // Without the swagger there is nothing to refuse by (the skip is
        // reported when the doubles start).
        return;
    }
    let http = reqwest::Client::new();
    let bss = |m: reqwest::Method, path: &str| {
        http.request(m, format!("{}{path}", c.bss.url()))
            .bearer_auth(BSS_TOKEN)
    };

    // A body that does not match BootParams: nids are integers.
    let r = bss(reqwest::Method::PUT, "/boot/v1/bootparameters")
        .json(&json!({"nids": ["one"], "kernel": "http://k"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let problem: serde_json::Value = r.json().await.unwrap();
    assert!(
        problem["detail"].as_str().unwrap().contains("swagger"),
        "{problem}"
    );
    let v = c.bss.take_violations();
    assert!(
        v.len() == 1 && v[0].contains("body") && v[0].contains("nids"),
        "{v:?}"
    );

    // A path, a method and a query parameter the swagger does not have.
    bss(reqwest::Method::GET, "/boot/v1/bootparams")
        .send()
        .await
        .unwrap();
    bss(reqwest::Method::POST, "/boot/v1/hosts/extra")
        .send()
        .await
        .unwrap();
    bss(reqwest::Method::PATCH, "/boot/v1/bootscript")
        .send()
        .await
        .unwrap();
    bss(
        reqwest::Method::GET,
        "/boot/v1/bootparameters?host=x1000c0s0b0n0",
    )
    .send()
    .await
    .unwrap();
    let v = c.bss.take_violations();
    assert_eq!(v.len(), 4, "{v:?}");
    assert!(v[0].contains("no such path"), "{v:?}");
    assert!(v[2].contains("not the method PATCH"), "{v:?}");
    assert!(v[3].contains("\"host\" is not declared"), "{v:?}");

    // SMD: paths are checked below /hsm/v2, integer parameters are integers.
    let smd = |path: &str| {
        http.get(format!("{}{path}", c.smd.url()))
            .bearer_auth(SMD_TOKEN)
    };
    let r = smd("/hsm/v2/groups/compute/members").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = smd("/groups/compute/members").send().await.unwrap();
    assert_eq!(r.status(), 400);
    let v = c.smd.take_violations();
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(v[0].contains("/hsm/v2"), "{v:?}");
    // A NID that is no number is SMD's own 400, not a swagger violation (the
    // swagger types the parameter as a string).
    let r = smd("/hsm/v2/State/Components?nid=abc")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(c.smd.violations().is_empty());
    // nid_start is declared as a string in the swagger; the double does not
    // filter by it and says so loudly instead of answering wrongly.
    let r = smd("/hsm/v2/State/Components?nid_start=1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 501);
    let v = c.smd.take_violations();
    assert!(v.iter().any(|v| v.contains("does not implement")), "{v:?}");
}

#[test]
fn the_doubles_check_their_own_answers_too() {
    use kiln_testsupport::openchami::{reference_dir, swagger::Swagger};
    let dir = match reference_dir() {
        Ok(dir) => dir,
        Err(absent) => return kiln_testsupport::reference::skipped(&absent),
    };
    let bss = Swagger::load(&dir.join("bss-swagger.yaml"), "").unwrap();
    let get = bss
        .check_request("GET", "/boot/v1/bootparameters", &[], None, b"")
        .unwrap_or_else(|e| panic!("{e:?}"));
    assert!(bss
        .check_response(
            &get,
            200,
            Some(&json!([{"hosts": ["x1000c0s0b0n0"], "kernel": "http://k"}]))
        )
        .is_empty());
    let v = bss.check_response(&get, 200, Some(&json!([{"nids": ["one"]}])));
    assert!(v.len() == 1 && v[0].contains("one"), "{v:?}");
    let v = bss.check_response(&get, 200, None);
    assert!(v.len() == 1 && v[0].contains("missing"), "{v:?}");
    let patch = bss
        .check_request(
            "PATCH",
            "/boot/v1/bootparameters",
            &[],
            Some("application/json"),
            br#"{"hosts": ["x1000c0s0b0n0"], "params": "quiet"}"#,
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
    let v = bss.check_response(&patch, 418, None);
    assert!(v.len() == 1 && v[0].contains("not declared"), "{v:?}");
    // A JSON body sent as something else is refused.
    let e = bss
        .check_request(
            "PUT",
            "/boot/v1/bootparameters",
            &[],
            Some("text/plain"),
            br#"{"hosts": []}"#,
        )
        .err()
        .unwrap();
    assert!(e[0].contains("application/json"), "{e:?}");
}
