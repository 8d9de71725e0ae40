//! The group phase: an admin and `--group-devices` devices, all in this process, in a new group
//! of their own on the campaign's relay, push sealed messages at `--group-rate` each and pull
//! each other's; after a third of `--group-duration` the admin rotates the group's keys, after
//! two thirds it revokes the last device. Measured:
//!
//! - delivery: every message of a remaining member (and every message of the revoked device
//!   the relay acknowledged before the revocation) must reach every other remaining member,
//!   pulled, verified and opened; latency runs from the push until the last of them had it;
//! - blobs the remaining members could not open or verify, and other integrity problems;
//! - the refusal: from the admin's `revoke()` call to the revoked device seeing the relay
//!   refuse it (its session ended, or its reconnect refused, with `DeviceRevoked`);
//! - the revoked device afterwards: it keeps pulling on its client, then reconnecting with a
//!   new one on its state, every second until the phase ends; what it obtained that was sealed
//!   after `revoke()` returned, and any session the relay admitted, must be nothing.
//!
//! The campaign device and the responder take no part: their group is untouched.

mod devices;

pub(super) use devices::connect_with;
mod tally;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use sync_client::{GroupMaterial, MemberInfo, SyncClient};
use sync_core::ConnectionStatus;
use sync_types::DeviceId;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use self::devices::{
    PHASE, Probe, Reconnect, Shared, probe_revoked, spawn_follower, spawn_pacer, spawn_receiver,
};
use super::Args;
use super::local::CHILD_TIMEOUT;
use super::phases::{self, begin, finish, ms_since};
use super::session::Session;
use super::verdict::{GroupCheck, KeyChange, Refusal, Thresholds};
use crate::device;
use crate::events::round3;
use crate::report::PhaseResult;
use crate::stats::Summary;

pub(super) use self::devices::GroupTarget;

/// Longest wait for the admin's rotation or revocation.
const KEY_CHANGE_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the admin asks the relay for the group's members while the group gets ready.
const MEMBERS_EVERY: Duration = Duration::from_millis(100);
/// Longest wait, before the revocation, for the answers to the last pushes of the device to
/// be revoked (what is not acknowledged by then is not due anywhere).
const PUSH_SETTLE: Duration = Duration::from_secs(2);

/// Runs the group phase against the relay at `target`.
pub(super) async fn run(
    session: &Arc<Session>,
    args: &Args,
    target: &GroupTarget,
) -> (PhaseResult, GroupCheck) {
    let devices = usize::from(args.group_devices) + 1;
    let revoked = devices - 1;
    let secs = args.group_seconds();
    let start = begin(
        session,
        PHASE,
        &[
            ("devices", json!(devices)),
            ("admin", json!(0)),
            ("revoked", json!(revoked)),
            ("rate_per_device", json!(args.group_rate)),
            ("duration_s", json!(secs)),
            (
                "group",
                json!("a new group on the campaign's relay, its devices in this process"),
            ),
        ],
    );
    let limits = args.thresholds();
    let made = tempfile::Builder::new()
        .prefix("sync-stress-group-")
        .tempdir()
        .map_err(|e| format!("cannot create a temporary directory: {e}"))
        .and_then(|dir| {
            let mut rng = device::os_rng().map_err(|e| e.to_string())?;
            Ok((dir, GroupMaterial::random(&mut rng)))
        });
    let (dir, material) = match made {
        Ok(m) => m,
        Err(why) => return setup_failed(session, &limits, start, &why),
    };
    let dirs: Vec<PathBuf> = (0..devices)
        .map(|d| dir.path().join(format!("device-{d}")))
        .collect();
    let mut clients = Vec::new();
    let mut step = String::new();
    let setup_started = Instant::now();
    let ready = tokio::time::timeout(
        CHILD_TIMEOUT,
        setup(target, &material, &dirs, &mut clients, &mut step),
    )
    .await
    .unwrap_or_else(|_| Err(format!("not ready within {CHILD_TIMEOUT:?}: {step}")));
    if let Err(why) = ready {
        close_all(&clients).await;
        return setup_failed(session, &limits, start, &why);
    }
    let names: Vec<String> = clients.iter().map(|c| c.device_id().short()).collect();
    session.emit(
        PHASE,
        "group_ready",
        &[
            ("devices", json!(names)),
            ("admin", json!(names[0])),
            ("to_revoke", json!(names[revoked])),
            ("setup_ms", json!(round3(ms_since(setup_started)))),
        ],
    );
    let shared = Shared::new(Arc::clone(session), names, revoked);
    let mut followers: Vec<JoinHandle<()>> = Vec::new();
    for (d, c) in clients.iter().enumerate() {
        followers.push(spawn_follower(&shared, d, c));
        followers.push(spawn_receiver(&shared, d, c));
    }
    let ran = traffic(&shared, args, &clients, target, &material, &dirs[revoked]).await;
    let epochs: Vec<u32> = clients.iter().map(|c| c.epoch().0).collect();
    close_all(&clients).await;
    for f in followers {
        f.abort();
    }
    drop(dir);
    report(session, &limits, start, &shared, ran, &epochs, args)
}

/// What the traffic part of the phase came to.
struct Ran {
    rotation: KeyChange,
    revocation: KeyChange,
    probe: Probe,
    /// Every message due arrived before the phase gave up waiting.
    drained: bool,
}

/// Connects the admin (the first device in the group: it writes the group's genesis record
/// and is its admin), then the other devices, and waits until every one has enrolled.
/// `clients` receives each client as it connects (device order), `step` what is under way.
async fn setup(
    target: &GroupTarget,
    material: &GroupMaterial,
    dirs: &[PathBuf],
    clients: &mut Vec<SyncClient>,
    step: &mut String,
) -> Result<(), String> {
    let Some(admin_dir) = dirs.first() else {
        return Err("no devices".into());
    };
    *step = "connecting the admin".into();
    let admin = devices::connect(target, material, admin_dir, "group admin")
        .await
        .map_err(|e| format!("the admin could not connect: {e}"))?;
    clients.push(admin.clone());
    connected(&admin, 0)?;
    *step = "waiting for the admin's genesis record".into();
    until_members(&admin, |m| m.iter().any(|m| m.this_device && m.admin)).await?;
    *step = format!("connecting {} devices", dirs.len() - 1);
    let joining: Vec<_> = dirs
        .iter()
        .enumerate()
        .skip(1)
        .map(|(d, dir)| {
            let (target, material, dir) = (target.clone(), material.clone(), dir.clone());
            tokio::spawn(async move {
                let name = format!("group device {d}");
                devices::connect(&target, &material, &dir, &name).await
            })
        })
        .collect();
    let mut failed = None;
    for (i, j) in joining.into_iter().enumerate() {
        let d = i + 1;
        match j.await {
            Ok(Ok(c)) => {
                if let Err(e) = connected(&c, d) {
                    failed.get_or_insert(e);
                }
                clients.push(c);
            }
            Ok(Err(e)) => {
                failed.get_or_insert(format!("device {d} could not connect: {e}"));
            }
            Err(e) => {
                failed.get_or_insert(format!("device {d}: connect task failed: {e}"));
            }
        }
    }
    if let Some(f) = failed {
        return Err(f);
    }
    *step = format!("waiting for {} devices to enroll", dirs.len());
    let all = dirs.len();
    until_members(&admin, |m| {
        m.iter().filter(|m| m.revoked_at.is_none()).count() >= all
    })
    .await
}

/// The device `d` must be connected to go on.
fn connected(c: &SyncClient, d: usize) -> Result<(), String> {
    match c.status().connection {
        ConnectionStatus::Connected => Ok(()),
        other => Err(format!("device {d} is not connected: {other:?}")),
    }
}

/// Asks the admin for the group's members until `ready` holds for them (the caller bounds it).
pub(super) async fn until_members(
    admin: &SyncClient,
    ready: impl Fn(&[MemberInfo]) -> bool,
) -> Result<(), String> {
    let mut ticker = tokio::time::interval(MEMBERS_EVERY);
    loop {
        ticker.tick().await;
        match admin.members().await {
            Ok(m) if ready(&m) => return Ok(()),
            Ok(_) | Err(sync_client::ClientError::NotConnected) => {}
            Err(e) => return Err(format!("the group's members could not be read: {e}")),
        }
    }
}

/// Watches `client` (a pull on every announcement, and every `poll`), hands each batch to
/// `on_batch`, then commits it (`who` names the device if the cursor cannot be saved).
pub(super) fn spawn_batches(
    client: &SyncClient,
    poll: Duration,
    who: String,
    mut on_batch: impl FnMut(&sync_client::PullBatch) + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    use sync_client::{WatchEvent, WatchOptions};
    let client = client.clone();
    let mut watcher = client.watch(WatchOptions {
        poll: Some(poll),
        ..WatchOptions::default()
    });
    tokio::spawn(async move {
        while let Some(event) = watcher.next().await {
            if let WatchEvent::Batch(batch) = event {
                on_batch(&batch);
                if let Err(e) = client.commit_pull(&batch).await {
                    tracing::warn!(error = %e, device = %who, "cursor not saved");
                }
            }
        }
    })
}

/// Closes every client (at once, each bounded).
pub(super) async fn close_all(clients: &[SyncClient]) {
    let closing: Vec<_> = clients
        .iter()
        .cloned()
        .map(|c| tokio::spawn(async move { c.close().await }))
        .collect();
    for c in closing {
        let _ = tokio::time::timeout(CHILD_TIMEOUT, c).await;
    }
}

/// The traffic: every device pushes at `--group-rate` for `--group-duration`; the admin rotates
/// after a third, revokes the last device after two thirds; then the last deliveries are
/// awaited (at most `--reply-timeout`) while the revoked device keeps trying.
async fn traffic(
    shared: &Arc<Shared>,
    args: &Args,
    clients: &[SyncClient],
    target: &GroupTarget,
    material: &GroupMaterial,
    revoked_dir: &std::path::Path,
) -> Ran {
    let revoked = shared.revoked;
    let admin = &clients[0];
    let period = Duration::from_secs_f64(1.0 / args.group_rate).max(Duration::from_millis(1));
    let timeout = Duration::from_secs(args.reply_timeout);
    let (stop, stopped) = watch::channel(false);
    let (stop_revoked, revoked_stopped) = watch::channel(false);
    let mut pacers = Vec::new();
    for (d, c) in clients.iter().enumerate().take(revoked) {
        pacers.push(spawn_pacer(shared, d, c, period, timeout, stopped.clone()));
    }
    let revoked_pacer = spawn_pacer(
        shared,
        revoked,
        &clients[revoked],
        period,
        timeout,
        revoked_stopped,
    );
    let t0 = tokio::time::Instant::now();
    let span = Duration::from_secs(args.group_seconds());

    tokio::time::sleep_until(t0 + span / 3).await;
    let rotation = key_change(shared, admin, None).await;

    tokio::time::sleep_until(t0 + span * 2 / 3).await;
    // The device to be revoked stops pushing and its last pushes are answered first: whatever
    // the relay acknowledged from it before the revocation is due at every remaining member.
    let _ = stop_revoked.send(true);
    let _ = tokio::time::timeout(PUSH_SETTLE.min(timeout), revoked_pacer).await;
    let victim = clients[revoked].device_id();
    let revocation = key_change(shared, admin, Some((revoked, victim))).await;
    let (stop_probe, probe_stopped) = watch::channel(false);
    let prober = matches!(revocation, KeyChange::Done { .. }).then(|| {
        let how = Reconnect {
            target: target.clone(),
            material: material.clone(),
            dir: revoked_dir.to_path_buf(),
        };
        tokio::spawn(probe_revoked(
            Arc::clone(shared),
            clients[revoked].clone(),
            how,
            probe_stopped,
        ))
    });

    tokio::time::sleep_until(t0 + span).await;
    let _ = stop.send(true);
    for p in pacers {
        let _ = tokio::time::timeout(timeout + Duration::from_secs(1), p).await;
    }
    let drained = shared
        .until_complete(tokio::time::Instant::now() + timeout)
        .await;
    let _ = stop_probe.send(true);
    let probe = match prober {
        Some(p) => p.await.unwrap_or_default(),
        None => Probe::default(),
    };
    Ran {
        rotation,
        revocation,
        probe,
        drained,
    }
}

/// The admin rotates the group's keys, or revokes `revoke` (a rotation leaving it out);
/// reported, marked on the charts, and what came of it.
async fn key_change(
    shared: &Shared,
    admin: &SyncClient,
    revoke: Option<(usize, DeviceId)>,
) -> KeyChange {
    let expected = admin.epoch().0 + 1;
    let holders: Vec<usize> = (0..shared.devices)
        .filter(|d| revoke.is_none_or(|(r, _)| *d != r))
        .collect();
    shared.change_called(expected, holders, revoke.is_some());
    let started = Instant::now();
    let answer = match revoke {
        None => tokio::time::timeout(KEY_CHANGE_TIMEOUT, admin.rotate()).await,
        Some((_, device)) => {
            tokio::time::timeout(KEY_CHANGE_TIMEOUT, admin.revoke(&[device])).await
        }
    };
    let call_ms = ms_since(started);
    let (event, what) = match revoke {
        None => ("rotation", "key rotation".to_string()),
        Some((r, _)) => ("revocation", format!("revoked {}", shared.name(r))),
    };
    let device = revoke.map(|(r, _)| shared.name(r).to_string());
    match answer {
        Ok(Ok(epoch)) => {
            if revoke.is_some() {
                shared.revoke_returned();
            }
            shared.emit(
                event,
                &[
                    ("epoch", json!(epoch.0)),
                    ("call_ms", json!(round3(call_ms))),
                    ("device", json!(device)),
                ],
            );
            shared.session().mark(format!("{what} → epoch {}", epoch.0));
            KeyChange::Done {
                epoch: epoch.0,
                call_ms,
            }
        }
        failed => {
            let why = match failed {
                Ok(Err(e)) => e.to_string(),
                _ => format!("no answer within {KEY_CHANGE_TIMEOUT:?}"),
            };
            shared.emit(
                &format!("{event}_failed"),
                &[("error", json!(why)), ("device", json!(device))],
            );
            KeyChange::Failed(why)
        }
    }
}

/// The phase when its group could not be set up: failed, nothing measured.
fn setup_failed(
    session: &Session,
    limits: &Thresholds,
    start: f64,
    why: &str,
) -> (PhaseResult, GroupCheck) {
    let check = GroupCheck {
        rotation: KeyChange::Failed(format!("not attempted: {why}")),
        revocation: KeyChange::Failed("not attempted".into()),
        messages: 0,
        lost: 0,
        undecryptable: 0,
        integrity: 0,
        refusal: None,
        revoked_reads: 0,
        revoked_admitted: 0,
    };
    let note = format!("the group could not be set up: {why}");
    let result = phases::setup_failed(session, limits, PHASE, start, why, note);
    (result, check)
}

/// Counts what the phase measured, writes its `group_stats` and `phase_end` events, and the
/// report's notes.
fn report(
    session: &Session,
    limits: &Thresholds,
    start: f64,
    shared: &Shared,
    ran: Ran,
    epochs: &[u32],
    args: &Args,
) -> (PhaseResult, GroupCheck) {
    let t = shared.tally();
    let n = shared.counts();
    let p = &ran.probe;
    let revoked = shared.revoked;
    let lost = t.messages - t.delivered;
    let refusal = shared.refusal();
    session.record_points(&t.points);
    session.emit(
        PHASE,
        "group_stats",
        &[
            ("messages", json!(t.messages)),
            ("delivered", json!(t.delivered)),
            ("lost", json!(lost)),
            ("lost_unacked", json!(t.lost_unacked)),
            ("deliveries", json!(t.deliveries)),
            ("deliveries_due", json!(t.deliveries_due)),
            ("duplicates", json!(n.duplicates)),
            ("undecryptable", json!(n.undecryptable)),
            ("integrity_problems", json!(n.integrity)),
            ("push_failures", json!(n.push_failures)),
            ("revoked_unacked", json!(t.revoked_unacked)),
            ("revoked_reads", json!(t.revoked_reads)),
            ("revoked_undecryptable", json!(n.revoked_undecryptable)),
            ("revoked_pulls", json!(p.pulls)),
            ("revoked_pulls_failed", json!(p.pulls_failed)),
            ("revoked_reconnects", json!(p.reconnects)),
            ("revoked_reconnects_refused", json!(p.refused)),
            ("revoked_admitted", json!(n.admitted)),
            ("refusal_ms", json!(refusal.as_ref().map(|r| round3(r.0)))),
            ("epochs", json!(epochs)),
        ],
    );
    let secs = args.group_seconds();
    #[allow(clippy::cast_precision_loss)]
    let third = secs as f64 / 3.0;
    let mut notes = vec![
        format!(
            "{} devices (device 0 the admin) in a new group of their own on the campaign's relay, each pushing {}/s for {secs} s; rotation after {third:.1} s, revocation of device {revoked} ({}) after {:.1} s",
            shared.devices,
            args.group_rate,
            shared.name(revoked),
            2.0 * third
        ),
        format!(
            "{}/{} messages reached every other remaining member ({}/{} deliveries, {} duplicates); latency: from the push until the last remaining member had pulled, verified and opened it",
            t.delivered, t.messages, t.deliveries, t.deliveries_due, n.duplicates
        ),
    ];
    if lost > 0 {
        notes.push(format!(
            "{lost} messages lost: {} never acknowledged by the relay (still in the sender's outbox, or refused), {} acknowledged but not received by every remaining member",
            t.lost_unacked,
            lost - t.lost_unacked
        ));
    }
    if let Some((ms, sender, at)) = t.slowest {
        notes.push(format!(
            "slowest message: {ms:.1} ms, from device {sender} ({}), pushed at {at:.3} s",
            shared.name(sender)
        ));
    }
    if !ran.drained {
        notes.push(format!(
            "after the traffic, {} s (--reply-timeout) were not enough for every delivery",
            args.reply_timeout
        ));
    }
    for (what, change, holders) in [
        ("rotation", &ran.rotation, "every device"),
        ("revocation", &ran.revocation, "every remaining device"),
    ] {
        let spread = match change {
            KeyChange::Done { epoch, .. } => match shared.propagation_ms(*epoch) {
                Some(ms) => format!("; {holders} held epoch {epoch} {ms:.1} ms after the call"),
                None => format!("; not {holders} held epoch {epoch} by the end"),
            },
            KeyChange::Failed(_) => String::new(),
        };
        notes.push(format!("{what}: {}{spread}", change.describe()));
    }
    notes.push(match &refusal {
        Some((call, ret, how)) => format!(
            "revoked device refused {call:.1} ms after the revoke() call ({}): {how}",
            match *ret {
                Some(r) if r < 0.0 => format!("{:.1} ms before it returned", -r),
                Some(r) => format!("{r:.1} ms after it returned"),
                None => "it never returned".to_string(),
            }
        ),
        None => "the revoked device never saw itself refused".into(),
    });
    notes.push(format!(
        "revoked device after its revocation: {} pulls on its client ({} failed, {} blobs), {} reconnects ({} refused with DeviceRevoked, {} admitted, {} otherwise failed); {} messages sealed after the revocation read, {} blobs it could not open",
        p.pulls,
        p.pulls_failed,
        p.blobs,
        p.reconnects,
        p.refused,
        p.admitted,
        p.other,
        t.revoked_reads,
        n.revoked_undecryptable
    ));
    notes.push(format!(
        "remaining members: {} blobs undecryptable, {} other integrity problems; {} pushes failed; {} messages of the revoked device not acknowledged before the revocation (not due)",
        n.undecryptable, n.integrity, n.push_failures, t.revoked_unacked
    ));
    let epochs_text: Vec<String> = epochs
        .iter()
        .enumerate()
        .map(|(d, e)| {
            let who = if d == revoked { " (revoked)" } else { "" };
            format!("device {d}{who}: {e}")
        })
        .collect();
    notes.push(format!("key epochs at the end: {}", epochs_text.join(", ")));
    let check = GroupCheck {
        rotation: ran.rotation,
        revocation: ran.revocation,
        messages: t.messages,
        lost,
        undecryptable: n.undecryptable,
        integrity: n.integrity,
        refusal: refusal.map(|(after_call_ms, _, how)| Refusal { after_call_ms, how }),
        revoked_reads: t.revoked_reads,
        revoked_admitted: n.admitted,
    };
    let summary = Summary::new(t.messages, lost, &t.latencies_ms);
    let ok = check.ok(limits);
    let result = finish(session, limits, PHASE, start, summary, notes, ok);
    (result, check)
}
