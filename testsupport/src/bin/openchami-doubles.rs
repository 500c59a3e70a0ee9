//! The BSS, SMD and boot-service test doubles as a standalone process, for
//! the devel stack (`devel/run.sh`): N compute nodes `x1000c0s<i>b0n0` in
//! the SMD group `compute` (boot-service knows them as Node resources), an
//! optional bearer token (BSS and SMD). Prints `BSS_URL=...`,
//! `SMD_URL=...` and `BOOT_SERVICE_URL=...`, then serves until killed. Every request is checked against
//! OpenCHAMI's swagger files (../shared/reference/openchami, or
//! $KILN_OPENCHAMI_REFERENCE); violations are printed as they happen.
//! Without the swagger files the doubles serve unchecked and say so.

use kiln_testsupport::openchami::{
    BootServiceNode, BootServiceTestDouble, BssTestDouble, Node, SmdTestDouble,
};

#[tokio::main]
async fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let count: u32 = value("--nodes")
        .map(|n| n.parse().map_err(|e| format!("--nodes: {e}")))
        .transpose()?
        .unwrap_or(3);
    let token = value("--token");
    let nodes: Vec<Node> = (0..count)
        .map(|i| {
            Node::new(
                &format!("x1000c0s{i}b0n0"),
                &format!("02:00:00:00:{:02x}:{:02x}", i / 256, i % 256),
                i + 1,
            )
        })
        .collect();
    let members: Vec<&str> = nodes.iter().map(|n| n.xname.as_str()).collect();
    let smd = SmdTestDouble::start(&nodes, &[("compute", &members)], token.as_deref()).await?;
    let bss = BssTestDouble::start(&nodes, token.as_deref()).await?;
    let boot_service = BootServiceTestDouble::start(
        &nodes
            .iter()
            .map(|node| BootServiceNode {
                node: node.clone(),
                groups: vec!["compute".into()],
            })
            .collect::<Vec<_>>(),
    )
    .await?;
    println!("BSS_URL={}", bss.url());
    println!("SMD_URL={}", smd.url());
    println!("BOOT_SERVICE_URL={}", boot_service.url());
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tick.tick().await;
        for v in bss
            .take_violations()
            .into_iter()
            .chain(smd.take_violations())
        {
            eprintln!("swagger violation: {v}");
        }
        for v in boot_service.take_violations() {
            eprintln!("boot-service rule violation: {v}");
        }
    }
}
