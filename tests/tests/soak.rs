//! Kill -9 soak: the agent is SIGKILLed again and again at random points
//! while members fail the VIP over (gratuitous ARPs from vm-a and vm-b, as
//! keepalived sends) and an operator writes (havipctl create / associate /
//! disassociate / delete in a loop). After every restart: the store is whole
//! (the agent starts, `export` parses and re-`apply`s, every acknowledged
//! write is there), the maps equal the store (`vips`/`vip_state` and
//! `members`, dumped with bpftool), `describe` shows every HAVIP, and the
//! holder the kernel learned — including from claims made while the agent
//! was dead — is still the holder, at the same epoch, and is what the agent
//! reports.
//!
//! Bounded: [`KILLS`] kills by default (the issue asks for 200; 40 keep the
//! whole test under a minute on a 2-core machine, each restart loading and
//! verifying the XDP object). `HAVIP_SOAK_KILLS=200` runs the longer soak,
//! `HAVIP_SOAK_SEED` replays a run's random choices.

mod control_support;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    process::Command,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use control_support::{Ctl, OBSERVE_TIMEOUT};
use havip_api::view::HavipView;
use havip_common::ABI_VERSION;
use havip_lab::{
    garp,
    netns::LabId,
    scenario::Lab,
    state,
    topology::{Guest, GUESTS, GUEST_IF, MEMBERS, VIP, VM_A},
    wait,
};

/// SIGKILLs by default; `HAVIP_SOAK_KILLS` overrides.
const KILLS: u32 = 40;
/// How long the agent runs under load before each kill: uniformly random.
const RUN_MS: (u64, u64) = (20, 400);
/// HAVIPs the writer creates and deletes (vm-c, their member, may be in 5 at most).
const POOL: u8 = 8;
/// Gaps between gratuitous ARPs.
const CLAIM_GAP_MS: (u64, u64) = (5, 40);

fn pool_vip(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 1, 100 + i)
}

/// xorshift64*: enough randomness for where to kill, replayable by seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn range(&mut self, (lo, hi): (u64, u64)) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

/// A pool HAVIP as the writer last had it acknowledged: absent, or present
/// with (`true`) or without vnic-c as member.
type Expected = BTreeMap<Ipv4Addr, Option<bool>>;

#[derive(Default)]
struct Book {
    expected: Expected,
    /// Writes whose outcome nobody heard (the agent died under them): either is fine.
    uncertain: BTreeSet<Ipv4Addr>,
    acked: u64,
    refused: u64,
    cut: u64,
}

/// A worker that runs while `go` is set and says when it has stopped.
struct Gate {
    go: AtomicBool,
    idle: [AtomicBool; 2],
    quit: AtomicBool,
}

impl Gate {
    fn pause(&self) -> Result<()> {
        self.go.store(false, Ordering::SeqCst);
        wait::until("the writer and the claimer to pause", Duration::from_secs(10), || {
            Ok(self.idle.iter().all(|i| i.load(Ordering::SeqCst)).then_some(()))
        })
    }

    /// Blocks worker `w` while paused; false once the soak is over.
    fn wait_go(&self, w: usize) -> bool {
        while !self.go.load(Ordering::SeqCst) {
            if self.quit.load(Ordering::SeqCst) {
                return false;
            }
            self.idle[w].store(true, Ordering::SeqCst);
            thread::sleep(Duration::from_millis(2));
        }
        self.idle[w].store(false, Ordering::SeqCst);
        !self.quit.load(Ordering::SeqCst)
    }
}

#[test]
fn sigkill_soak_keeps_store_maps_and_holder() -> Result<()> {
    let kills = match std::env::var("HAVIP_SOAK_KILLS") {
        Ok(v) => v.parse().context("HAVIP_SOAK_KILLS")?,
        Err(_) => KILLS,
    };
    let seed = match std::env::var("HAVIP_SOAK_SEED") {
        Ok(v) => v.parse().context("HAVIP_SOAK_SEED")?,
        Err(_) => std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos() as u64 | 1,
    };
    eprintln!("soak: {kills} kills, HAVIP_SOAK_SEED={seed}");
    let mut lab = Lab::create(LabId::unique("test"), true)?;
    // Verification off: nothing in the guests answers for the VIP, and the
    // claims here are the only thing that may move a holder.
    let started = lab.start_agent_with("", "[verification]\nenabled = false\n");
    lab.on_error(started)?;
    lab.run(|lab| soak(lab, kills, seed))
}

fn soak(lab: &mut Lab, kills: u32, seed: u64) -> Result<()> {
    let t0 = Instant::now();
    let ctl = Ctl::of(lab)?;
    let hv = lab.topo.hv().to_owned();
    let guest_ns: Vec<(Guest, String)> = MEMBERS.iter().map(|g| (*g, lab.topo.ns(*g))).collect();
    let mut ifindex = BTreeMap::new();
    for g in GUESTS {
        ifindex.insert(g.vnic.to_owned(), if_index(&hv, g.vnic)?);
    }
    garp::send(&guest_ns[0].1, GUEST_IF, VIP, VM_A.mac())?;
    lab.wait_holder(VM_A, OBSERVE_TIMEOUT)?;

    let book =
        Mutex::new(Book { expected: (0..POOL).map(|i| (pool_vip(i), None)).collect(), ..Book::default() });
    let gate = Gate { go: AtomicBool::new(false), idle: Default::default(), quit: AtomicBool::new(false) };
    let last_claimer = Mutex::new(VM_A);
    let claims = AtomicU64::new(0);
    let mut rng = Rng(seed);
    let mut stats = Stats::default();

    thread::scope(|s| -> Result<()> {
        let writer = s.spawn(|| write_loop(&ctl, &book, &gate, Rng(seed ^ 0x5eed)));
        let claimer = s.spawn(|| -> Result<()> {
            let mut rng = Rng(seed ^ 0xc1a1);
            while gate.wait_go(1) {
                let (g, ns) = &guest_ns[(rng.next() % 2) as usize];
                garp::send(ns, GUEST_IF, VIP, g.mac())?;
                *last_claimer.lock().unwrap() = *g;
                claims.fetch_add(1, Ordering::Relaxed);
                thread::sleep(Duration::from_millis(rng.range(CLAIM_GAP_MS)));
            }
            Ok(())
        });
        let result = (|| -> Result<()> {
            for kill in 1..=kills {
                gate.go.store(true, Ordering::SeqCst);
                thread::sleep(Duration::from_millis(rng.range(RUN_MS)));
                lab.agent()?.kill()?;
                gate.pause()?;
                // Sometimes a failover while no agent runs: the kernel must
                // take it, and the restarted agent must learn it.
                if rng.next().is_multiple_of(3) {
                    let now = *last_claimer.lock().unwrap();
                    let (g, ns) = guest_ns.iter().find(|(g, _)| *g != now).unwrap();
                    garp::send(ns, GUEST_IF, VIP, g.mac())?;
                    *last_claimer.lock().unwrap() = *g;
                    stats.claims_while_dead += 1;
                }
                let claimer = *last_claimer.lock().unwrap();
                let before = state::vip_state(&lab.pin_dir(), VIP)?.context("the VIP left the maps")?;
                ensure!(
                    before.holder_ifindex == ifindex[claimer.vnic],
                    "kill {kill}: the kernel's holder is ifindex {}, the last claim came from {}",
                    before.holder_ifindex,
                    claimer.vnic
                );

                let restart = Instant::now();
                lab.agent()?.restart().with_context(|| format!("restart {kill}"))?;
                stats.restart_max = stats.restart_max.max(restart.elapsed());
                stats.restarts += 1;

                check(lab, &ctl, &book, &ifindex, kill)
                    .and_then(|()| {
                        let after =
                            state::vip_state(&lab.pin_dir(), VIP)?.context("the VIP left the maps")?;
                        ensure!(
                            (after.holder_ifindex, after.holder_mac, after.epoch)
                                == (before.holder_ifindex, before.holder_mac, before.epoch),
                            "the restart changed the holder: {before:?} -> {after:?}"
                        );
                        ctl.wait_describe(
                            &VIP.to_string(),
                            "describe to show the kernel's holder",
                            OBSERVE_TIMEOUT,
                            |h| h.holder.as_deref() == Some(claimer.vnic) && h.epoch == before.epoch,
                        )
                        .with_context(|| format!("holder {} at epoch {}", claimer.vnic, before.epoch))?;
                        Ok(())
                    })
                    .with_context(|| format!("after kill {kill}"))?;
                stats.kills = kill;
            }
            Ok(())
        })();
        gate.quit.store(true, Ordering::SeqCst);
        gate.go.store(true, Ordering::SeqCst);
        let w = writer.join().expect("the writer does not panic");
        let c = claimer.join().expect("the claimer does not panic");
        result.and(w).and(c)
    })?;

    let book = book.into_inner().unwrap();
    let (_, last) = lab.holder()?.context("no holder at the end")?;
    eprintln!(
        "soak: {} kills, {} restarts (slowest {:?}), {} claims ({} while no agent ran, epoch {}), \
         {} writes acknowledged, {} refused, {} cut by a kill; {:?} in all; nothing lost",
        stats.kills,
        stats.restarts,
        stats.restart_max,
        claims.load(Ordering::Relaxed) + stats.claims_while_dead,
        stats.claims_while_dead,
        last.epoch,
        book.acked,
        book.refused,
        book.cut,
        t0.elapsed()
    );
    Ok(())
}

#[derive(Default)]
struct Stats {
    kills: u32,
    restarts: u32,
    restart_max: Duration,
    claims_while_dead: u64,
}

/// havipctl writes on the pool, one at a time, each chosen from what the
/// writer last saw acknowledged.
fn write_loop(ctl: &Ctl, book: &Mutex<Book>, gate: &Gate, mut rng: Rng) -> Result<()> {
    while gate.wait_go(0) {
        let i = (rng.next() % u64::from(POOL)) as u8;
        let (vip, now) = {
            let b = book.lock().unwrap();
            let vip = pool_vip(i);
            (vip, b.expected[&vip])
        };
        let v = vip.to_string();
        let coin = rng.next().is_multiple_of(2);
        let (args, then): (Vec<&str>, Option<bool>) = match now {
            None if coin => {
                (vec!["create", "--subnet", "vpc1", "--vip", &v, "--member", "vnic-c"], Some(true))
            }
            None => (vec!["create", "--subnet", "vpc1", "--vip", &v], Some(false)),
            Some(false) if coin => (vec!["associate", &v, "vnic-c"], Some(true)),
            Some(false) => (vec!["delete", &v], None),
            Some(true) if coin => (vec!["disassociate", &v, "vnic-c"], Some(false)),
            Some(true) => (vec!["delete", "--force", &v], None),
        };
        let out = ctl.run(&args)?;
        let mut b = book.lock().unwrap();
        match out.status.code() {
            Some(0) => {
                b.expected.insert(vip, then);
                b.acked += 1;
            }
            // Refused by a rule (vm-c in too many HAVIPs): nothing changed.
            Some(1) => b.refused += 1,
            // The agent died under the write: it may or may not have landed.
            _ => {
                b.uncertain.insert(vip);
                b.cut += 1;
                drop(b);
                // No agent: wait for the next one rather than spin.
                while gate.go.load(Ordering::SeqCst) && !gate.quit.load(Ordering::SeqCst) {
                    thread::sleep(Duration::from_millis(2));
                }
            }
        }
    }
    Ok(())
}

/// After a restart: the store whole and as acknowledged, the maps equal to
/// it, `describe` showing every HAVIP.
fn check(lab: &Lab, ctl: &Ctl, book: &Mutex<Book>, ifindex: &BTreeMap<String, u32>, kill: u32) -> Result<()> {
    // The store: export parses, as JSON and as the file, and re-applies.
    let desired = ctl.desired().context("export --json")?;
    let file = std::env::temp_dir().join(format!("havip-soak-{}-export-{kill}.toml", std::process::id()));
    std::fs::write(&file, ctl.ok(&["export"])?)?;
    let applied = ctl.ok(&["apply", "-f", &file.to_string_lossy()]);
    let _ = std::fs::remove_file(&file);
    applied.context("re-applying the export")?;
    let again = ctl.desired()?;
    ensure!(again.state == desired.state, "re-applying the export changed the state");
    let havips = &desired.state.havips;
    ensure!(
        havips.get(&VIP).is_some_and(|h| h.members == ["vnic-a", "vnic-b"]),
        "the lab's HAVIP is damaged"
    );

    // Every acknowledged write is there; a write cut by the kill is either way.
    {
        let mut b = book.lock().unwrap();
        let uncertain = std::mem::take(&mut b.uncertain);
        for (vip, want) in b.expected.iter_mut() {
            let seen = havips.get(vip).map(|h| match h.members.as_slice() {
                [] => Ok(false),
                [m] if m == "vnic-c" => Ok(true),
                other => Err(anyhow::anyhow!("{vip} has members {other:?}")),
            });
            let seen = seen.transpose()?;
            if uncertain.contains(vip) {
                *want = seen;
            } else {
                ensure!(seen == *want, "{vip}: stored {seen:?}, acknowledged {want:?}");
            }
        }
        let extra: Vec<_> = havips.keys().filter(|v| **v != VIP && !b.expected.contains_key(v)).collect();
        ensure!(extra.is_empty(), "HAVIPs nobody created: {extra:?}");
    }

    // The maps equal the store: the agent reconciles before READY=1.
    let status: havip_api::view::AgentStatus = ctl.json(&["status"])?;
    ensure!(
        status.reconciled_revision == status.revision,
        "maps at revision {}, store at {}",
        status.reconciled_revision,
        status.revision
    );
    for vip in std::iter::once(VIP).chain((0..POOL).map(pool_vip)) {
        let in_maps = state::vip_state(&lab.pin_dir(), vip)?.is_some();
        ensure!(
            in_maps == havips.contains_key(&vip),
            "{vip}: in the maps {in_maps}, in the store the opposite"
        );
    }
    let want_members: BTreeSet<(Ipv4Addr, u32)> =
        havips.values().flat_map(|h| h.members.iter().map(move |m| (h.vip, ifindex[m.as_str()]))).collect();
    let got_members = members_in_maps(lab)?;
    ensure!(got_members == want_members, "members map {got_members:?}, store {want_members:?}");

    let all: Vec<HavipView> = ctl.json(&["describe"])?;
    let shown: BTreeSet<_> = all.iter().map(|h| h.vip).collect();
    ensure!(
        shown == havips.keys().copied().collect(),
        "describe shows {shown:?}, the store has {:?}",
        havips.keys()
    );
    Ok(())
}

/// (VIP, ifindex) of every entry of the pinned `members` map, by bpftool.
fn members_in_maps(lab: &Lab) -> Result<BTreeSet<(Ipv4Addr, u32)>> {
    let pin = lab.pin_dir().join(format!("v{ABI_VERSION}")).join("members");
    let out = Command::new("bpftool").args(["-j", "map", "dump", "pinned"]).arg(&pin).output()?;
    if !out.status.success() {
        bail!("bpftool map dump {}: {}", pin.display(), String::from_utf8_lossy(&out.stderr));
    }
    let entries: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).context("bpftool's JSON")?;
    entries
        .iter()
        .map(|e| {
            let key = &e["formatted"]["key"];
            let vip: Vec<u8> = serde_json::from_value(key["vip"].clone()).context("members key vip")?;
            let vip: [u8; 4] = vip.try_into().map_err(|_| anyhow::anyhow!("a VIP of the wrong size"))?;
            let ifindex = key["ifindex"].as_u64().context("members key ifindex")? as u32;
            Ok((Ipv4Addr::from(vip), ifindex))
        })
        .collect()
}

fn if_index(ns: &str, name: &str) -> Result<u32> {
    let out = havip_lab::cmd::ip(&["-n", ns, "-j", "link", "show", name])?;
    let v: serde_json::Value = serde_json::from_str(&out).context("parsing `ip -j link`")?;
    Ok(v[0]["ifindex"].as_u64().with_context(|| format!("{name} has no ifindex"))? as u32)
}
