//! The host side of `fnhost:function/steps` (world 0.5): a background attempt's durable steps.
//! The engine only calls through a [`StepStore`] (the queue, behind it); a sleep or wait that
//! has not come due ends the attempt with a [`Suspended`] trap, which the caller reads back
//! from the outcome as a [`Suspension`] and records as the invocation's `sleeping` or
//! `waiting` state.

use std::sync::Arc;

use wasmtime::StoreContextMut;
use wasmtime::component::Linker;

use super::state::State;
use crate::workflow::{StepStore, Suspension};

/// The name the interface is imported by (semver: any 0.5.x guest links to it).
const INTERFACE: &str = "fnhost:function/steps@0.5.0";

/// The trap that ends an attempt which sleeps or waits.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(super) struct Suspended(pub(super) Suspension);

/// Links `fnhost:function/steps` for every component (only background attempts have a store).
pub(super) fn add_to_linker(linker: &mut Linker<State>) -> wasmtime::Result<()> {
    let mut steps = linker.instance(INTERFACE)?;
    steps.func_wrap_async("get", |store, (name,): (String,)| {
        Box::new(async move { get(store, name).await.map(|v| (v,)) })
    })?;
    steps.func_wrap_async("put", |store, (name, value): (String, Vec<u8>)| {
        Box::new(async move { put(store, name, value).await.map(|r| (r,)) })
    })?;
    steps.func_wrap_async("sleep-until", |store, (name, when): (String, u64)| {
        Box::new(async move { sleep_until(store, name, when).await })
    })?;
    steps.func_wrap_async(
        "wait-for-event",
        |store, (name, event, key, timeout): (String, String, String, u64)| {
            Box::new(async move {
                wait_for_event(store, name, (event, key), timeout)
                    .await
                    .map(|v| (v,))
            })
        },
    )?;
    Ok(())
}

fn store_of(store: &StoreContextMut<'_, State>) -> Option<Arc<dyn StepStore>> {
    store.data().steps.clone()
}

/// The latest wake time kept: 9999-12-31T23:59:59.999Z (what RFC 3339 can write).
const LATEST_MS: i64 = 253_402_300_799_999;

use crate::ids::now_ms;

/// A trap naming the call and why it cannot go on.
fn refused(call: &str, why: impl std::fmt::Display) -> wasmtime::Error {
    wasmtime::Error::msg(format!("fnhost:function/steps.{call}: {why}"))
}

const NOT_BACKGROUND: &str = "steps are kept only for background functions";

async fn get(store: StoreContextMut<'_, State>, name: String) -> wasmtime::Result<Option<Vec<u8>>> {
    let Some(steps) = store_of(&store) else {
        return Ok(None);
    };
    let recorded = steps.get(&name).await.map_err(|e| refused("get", e))?;
    Ok(recorded.flatten())
}

async fn put(
    store: StoreContextMut<'_, State>,
    name: String,
    value: Vec<u8>,
) -> wasmtime::Result<Result<(), String>> {
    let Some(steps) = store_of(&store) else {
        return Ok(Err(NOT_BACKGROUND.into()));
    };
    let put = steps.put(&name, Some(value)).await;
    Ok(put.map_err(|e| refused("put", e))?.map(drop))
}

/// Returns once `when` has passed, else suspends until then; the first call's time (kept as
/// the step's record) wins over a later run's.
async fn sleep_until(
    store: StoreContextMut<'_, State>,
    name: String,
    when: u64,
) -> wasmtime::Result<()> {
    let steps = store_of(&store).ok_or_else(|| refused("sleep-until", NOT_BACKGROUND))?;
    let recorded = steps
        .get(&name)
        .await
        .map_err(|e| refused("sleep-until", e))?;
    let kept = (recorded.flatten()).and_then(|v| String::from_utf8(v).ok()?.parse::<i64>().ok());
    let until = kept
        .unwrap_or_else(|| i64::try_from(when).unwrap_or(i64::MAX))
        .min(LATEST_MS);
    if now_ms() >= until {
        return Ok(());
    }
    if kept.is_none() {
        // The first call's time is the step's record: a later run asking "now + d" again
        // still wakes at this one.
        let put = steps.put(&name, Some(until.to_string().into_bytes())).await;
        put.map_err(|e| refused("sleep-until", e))?
            .map_err(|why| refused("sleep-until", why))?;
    }
    Err(wasmtime::Error::new(Suspended(Suspension::Sleep {
        step: name,
        until_ms: until,
    })))
}

/// The step's payload once its event came (or `None` once it timed out), else suspends.
async fn wait_for_event(
    store: StoreContextMut<'_, State>,
    name: String,
    (event, key): (String, String),
    timeout: u64,
) -> wasmtime::Result<Option<Vec<u8>>> {
    let call = "wait-for-event";
    let steps = store_of(&store).ok_or_else(|| refused(call, NOT_BACKGROUND))?;
    if let Some(recorded) = steps.get(&name).await.map_err(|e| refused(call, e))? {
        return Ok(recorded);
    }
    let now = now_ms();
    let (since, until) = match steps.waiting(&name) {
        Some((_, until)) if now >= until => {
            // Timed out: recorded, so a later run answers the same at once. An event that
            // came meanwhile was recorded first, and is what stands.
            let put = steps.put(&name, None).await.map_err(|e| refused(call, e))?;
            return put.map_err(|why| refused(call, why));
        }
        Some(wait) => wait,
        None => (
            now,
            (now.saturating_add(i64::try_from(timeout).unwrap_or(i64::MAX))).min(LATEST_MS),
        ),
    };
    Err(wasmtime::Error::new(Suspended(Suspension::Wait {
        step: name,
        event,
        key,
        since_ms: since,
        until_ms: until,
    })))
}
