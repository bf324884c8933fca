//! The dispatcher: wakes each device of the fleet when it is due, bounded
//! in time, in requests and in requests in flight, then drains the reports
//! still unanswered.

use crate::fleet::{Ctx, Device};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How the run went, from the dispatcher's side.
#[derive(Debug)]
pub struct RunEnd {
    pub devices: Vec<Device>,
    /// Unanswered reports still open when the grace period ran out.
    pub undrained: usize,
    pub over_budget: bool,
}

/// Wakes each device when it is due until `deadline`, at most `max_in_flight`
/// at a time; then, for up to `grace`, only devices with an unanswered
/// report (so that what each device last reported is known).
pub async fn run(
    ctx: Arc<Ctx>,
    devices: Vec<Device>,
    first_check_ins: impl Fn(usize) -> Instant,
    deadline: Instant,
    grace: Duration,
    max_in_flight: usize,
) -> RunEnd {
    let count = devices.len();
    let mut slots: Vec<Option<Device>> = Vec::with_capacity(count);
    let mut heap: BinaryHeap<Reverse<(Instant, usize)>> = BinaryHeap::with_capacity(count);
    for mut device in devices {
        device.next_check_in = first_check_ins(device.index);
        if let Some(due) = device.next_due(false) {
            heap.push(Reverse((due, slots.len())));
        }
        slots.push(Some(device));
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, Device)>();
    let mut in_flight = 0usize;
    let mut draining = false;
    let grace_end = deadline + grace;
    let mut over_budget = false;
    loop {
        let now = Instant::now();
        if !draining && (now >= deadline || over_budget) {
            draining = true;
            ctx.draining.store(true, Ordering::Relaxed);
            heap.clear();
            for (slot, device) in slots.iter().enumerate() {
                if let Some(due) = device.as_ref().and_then(|d| d.next_due(true)) {
                    heap.push(Reverse((due, slot)));
                }
            }
        }
        if draining && (now >= grace_end || (heap.is_empty() && in_flight == 0)) {
            break;
        }
        while in_flight < max_in_flight {
            let Some(&Reverse((due, slot))) = heap.peek() else {
                break;
            };
            if due > now {
                break;
            }
            heap.pop();
            let Some(device) = slots[slot].take() else {
                continue;
            };
            let late = now.saturating_duration_since(due);
            if late > Duration::from_secs(1) {
                ctx.recorder.dispatch_delay(late);
            }
            in_flight += 1;
            let ctx = Arc::clone(&ctx);
            let tx = tx.clone();
            tokio::spawn(async move {
                let device = device.wake(&ctx).await;
                let _ = tx.send((slot, device));
            });
        }
        if ctx.requests.load(Ordering::Relaxed) > ctx.request_cap {
            over_budget = true;
        }
        let wake_at = if in_flight >= max_in_flight {
            None
        } else {
            heap.peek().map(|Reverse((due, _))| *due)
        };
        let phase_end = if draining { grace_end } else { deadline };
        let wake_at = wake_at.map_or(phase_end, |w| w.min(phase_end));
        tokio::select! {
            returned = rx.recv() => {
                if let Some((slot, device)) = returned {
                    in_flight -= 1;
                    if let Some(due) = device.next_due(draining) {
                        heap.push(Reverse((due, slot)));
                    }
                    slots[slot] = Some(device);
                }
            }
            () = tokio::time::sleep_until(wake_at.into()) => {}
        }
    }
    settle(rx, slots, in_flight, count, over_budget).await
}

/// Waits for the devices still in flight at the end of the grace period —
/// they come back shortly (every request has a 10 s timeout) — and says
/// how the run ended.
async fn settle(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<(usize, Device)>,
    mut slots: Vec<Option<Device>>,
    mut in_flight: usize,
    count: usize,
    over_budget: bool,
) -> RunEnd {
    let settle = Instant::now() + Duration::from_secs(15);
    while in_flight > 0 && Instant::now() < settle {
        match tokio::time::timeout_at(settle.into(), rx.recv()).await {
            Ok(Some((slot, device))) => {
                in_flight -= 1;
                slots[slot] = Some(device);
            }
            _ => break,
        }
    }
    let devices: Vec<Device> = slots.into_iter().flatten().collect();
    let undrained = devices
        .iter()
        .filter(|d| d.update.as_ref().is_some_and(|u| u.unacked.is_some()))
        .count()
        + (count - devices.len());
    RunEnd {
        devices,
        undrained,
        over_budget,
    }
}
