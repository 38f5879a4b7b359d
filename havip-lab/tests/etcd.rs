//! The lab's etcd launcher on its own: a standalone cluster with TLS and
//! client-certificate auth, as the store tests use it. Needs root.

use std::{process::Command, time::Duration};

use anyhow::{ensure, Result};
use havip_lab::{etcd::EtcdCluster, netns::Scratch};

#[test]
fn a_standalone_tls_cluster_answers_only_clients_with_a_certificate() -> Result<()> {
    let scratch = Scratch::new("test")?;
    let dir = scratch.id.run_dir();
    std::fs::create_dir_all(&dir)?;
    let etcd = EtcdCluster::start(&scratch.id, &dir, 3, true)?;
    let ns = etcd.client_netns().expect("a standalone cluster has a client namespace").to_owned();
    let tls = etcd.tls_files().expect("TLS was asked for").clone();
    let endpoints = etcd.endpoints().join(",");
    assert!(endpoints.starts_with("https://198.18.0.11:2379,"), "{endpoints}");
    let etcdctl = |with_cert: bool, args: &[&str]| {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns, "etcdctl", "--dial-timeout=1s", "--command-timeout=2s"])
            .arg(format!("--endpoints={endpoints}"))
            .arg("--cacert")
            .arg(&tls.ca);
        if with_cert {
            cmd.arg("--cert").arg(&tls.cert).arg("--key").arg(&tls.key);
        }
        cmd.args(args).output()
    };
    let put = etcdctl(true, &["put", "/havip/v1/x", "1"])?;
    ensure!(
        put.status.success(),
        "put with the client certificate: {}",
        String::from_utf8_lossy(&put.stderr)
    );
    let get = etcdctl(true, &["get", "/havip/v1/x", "--print-value-only"])?;
    assert_eq!(String::from_utf8_lossy(&get.stdout).trim(), "1");
    let anonymous = etcdctl(false, &["get", "/havip/v1/x"])?;
    assert!(!anonymous.status.success(), "a client without a certificate was served");

    let rev = etcd.compact_to_latest()?;
    assert!(rev >= 2, "compacted to {rev}");
    let leader = etcd.leader()?;
    assert!(leader < 3);
    drop(etcd);
    let _ = Duration::ZERO;
    Ok(())
}
