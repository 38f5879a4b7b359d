//! Talking to the other hosts directly over the underlay, beside the shared
//! store: hints (a claim, sent before its commit, so peers re-point in
//! well under a millisecond) and liveness probes (answered by the peer's
//! XDP program, `xdp_underlay`, so a stopped agent still answers and only a
//! host that is gone stays silent).
//!
//! Wire formats, both plain UDP on the underlay:
//! - hint: one JSON [`Hint`] per datagram, to the peer's hint port (4791);
//!   at most [`MAX_HINT`] bytes, anything else is ignored and counted.
//! - probe: [`UnderlayProbe`] (16 bytes: `"HVPR"`, zero, a nonce); the answer
//!   is the same with `"HVPA"`, made by `xdp_underlay` (havip-ebpf/bpf/encap.h).

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    sync::atomic::AtomicU64,
};

use anyhow::{Context, Result};
use havip_common::{UnderlayProbe, PROBE_ANSWER, PROBE_REQUEST};
use tokio::net::UdpSocket;

use super::holders::Hint;

/// The largest hint datagram accepted, bytes.
pub const MAX_HINT: usize = 1024;

/// Counters of the underlay conversation, for /metrics.
#[derive(Debug, Default)]
pub struct PeerStats {
    /// Hints sent (one per peer).
    pub hints_sent: AtomicU64,
    /// Hints received and applied to the data plane.
    pub hints_applied: AtomicU64,
    /// Hints received and ignored (stale base, a local commit in flight,
    /// unreadable).
    pub hints_ignored: AtomicU64,
    /// Liveness probes sent.
    pub probes_sent: AtomicU64,
    /// Liveness probes answered.
    pub probes_answered: AtomicU64,
}

/// The hint socket: bound to the hint port on every address of this host's
/// namespace (peers send to its underlay address).
pub async fn bind_hints(port: u16) -> Result<UdpSocket> {
    UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port))
        .await
        .with_context(|| format!("binding the hint socket, UDP port {port} ([underlay] hint_port)"))
}

/// The probe socket: any local port; answers come back to it.
pub async fn bind_probes() -> Result<UdpSocket> {
    UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)).await.context("binding the probe socket")
}

/// A hint as one datagram.
pub fn encode_hint(hint: &Hint) -> Vec<u8> {
    serde_json::to_vec(hint).expect("a hint serialises")
}

/// A datagram read as a hint; `None` if it is not one.
pub fn decode_hint(datagram: &[u8]) -> Option<Hint> {
    if datagram.len() > MAX_HINT {
        return None;
    }
    serde_json::from_slice(datagram).ok()
}

/// A probe request carrying `nonce`.
pub fn probe_request(nonce: u64) -> [u8; 16] {
    UnderlayProbe { magic: PROBE_REQUEST, zero: 0, nonce }.to_bytes()
}

/// The nonce of a probe answer; `None` if the datagram is not one.
pub fn probe_answer(datagram: &[u8]) -> Option<u64> {
    let p =
        UnderlayProbe::from_bytes(datagram).filter(|p| datagram.len() == 16 && p.magic == PROBE_ANSWER)?;
    Some(p.nonce)
}

#[cfg(test)]
mod tests {
    use super::*;
    use havip_model::Holder;

    #[test]
    fn hints_round_trip_and_junk_is_no_hint() {
        let h = Hint {
            vip: Ipv4Addr::new(198, 18, 1, 50),
            holder: Some(Holder {
                host: "hv2".into(),
                vnic: "vnic-b".into(),
                mac: [2, 0, 0, 0, 0, 2],
                epoch: 3,
            }),
            base: 41,
            from: "hv2".into(),
        };
        assert_eq!(decode_hint(&encode_hint(&h)), Some(h));
        assert_eq!(decode_hint(b"{\"vip\":1}"), None);
        assert_eq!(decode_hint(&[b' '; MAX_HINT + 1]), None);
    }

    #[test]
    fn probe_answers_carry_the_nonce() {
        let mut p = probe_request(0x0102_0304_0506_0708);
        assert_eq!(probe_answer(&p), None, "a request is no answer");
        p[..4].copy_from_slice(&PROBE_ANSWER);
        assert_eq!(probe_answer(&p), Some(0x0102_0304_0506_0708));
        assert_eq!(probe_answer(&p[..15]), None);
    }
}
