//! The control loop of one host: the [`reconciler`] brings the data plane to
//! the desired state on every change, the [`observer`] writes back what the
//! data plane decided (holders, claims), the [`verifier`] checks that each
//! holder really has its VIP and corrects it when not, the [`feed`] tells
//! the operator (`havipctl events`, the log), and [`latency`] measures how
//! far all this lags behind the data plane. With many hosts, the
//! [`cluster`] loop keeps this host's data plane on the shared store's
//! holder records (the [`holders`] book), commits this host's claims,
//! talks to the [`peers`] directly, and [`underlay`] follows the network
//! between hosts.

pub mod cluster;
pub mod feed;
pub mod holders;
pub mod latency;
pub mod observer;
pub mod peers;
pub mod reconciler;
pub mod underlay;
pub mod verifier;

/// The desired state the control replays run on: subnet vpc1, vnic-a and
/// vnic-b on host hv1, HAVIP 198.18.1.50 with both as members;
/// `havip_extra` is added to the HAVIP's table, `more` after it (TOML).
#[cfg(test)]
pub(crate) fn replay_state(havip_extra: &str, more: &str) -> havip_model::DesiredState {
    let text = format!(
        r#"
        [[subnets]]
        name = "vpc1"
        cidr = "198.18.1.0/24"
        [[vnics]]
        name = "vnic-a"
        instance = "vm-a"
        subnet = "vpc1"
        ip = "198.18.1.11"
        mac = "02:00:c6:12:01:0b"
        [[vnics]]
        name = "vnic-b"
        instance = "vm-b"
        subnet = "vpc1"
        ip = "198.18.1.12"
        mac = "02:00:c6:12:01:0c"
        [[havips]]
        vip = "198.18.1.50"
        subnet = "vpc1"
        members = ["vnic-a", "vnic-b"]
        {havip_extra}
        {more}
        "#
    );
    let file: havip_model::DesiredFile = toml::from_str(&text).expect("the replay state parses");
    file.parse("hv1").expect("the replay state is valid")
}
