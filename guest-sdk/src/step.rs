//! Durable steps for background functions: `fnhost:function/steps` (fnhost 0.5.0).
//!
//! A background invocation may run several times: it is retried after a failure, and it runs
//! again from the start after [`sleep`] or [`wait_for_event`] ended an attempt. A *step* is a
//! piece of work whose result fnhost records for the invocation: [`run`] does the work the
//! first time and records its result (as JSON); every later run of the same invocation gets
//! the recorded result back without doing the work again.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use fnhost_sdk::{FetchError, Request, RequestExt, step};
//!
//! fn get_text(url: &str) -> Result<String, FetchError> {
//!     let request = fnhost_sdk::http::Request::get(url).body(Vec::new()).expect("a valid URL");
//!     Ok(String::from_utf8_lossy(fnhost_sdk::fetch(request)?.body()).into_owned())
//! }
//!
//! fn handle(req: Request) -> Result<String, Box<dyn std::error::Error>> {
//!     let id = req.invocation_id().unwrap_or_default().to_owned();
//!     // Done once per invocation, however often the invocation runs. A failure records
//!     // nothing, so the step is tried again when the invocation is retried.
//!     let order = step::try_run("create-order", || {
//!         get_text(&format!("https://shop.example/orders/new?key={id}"))
//!     })?;
//!     // Ends this attempt; the invocation runs again in an hour, when this returns.
//!     step::sleep("cool-off", Duration::from_secs(3600));
//!     // Ends this attempt until `POST /.fnhost/events/approved?key=ORDER`, or a day.
//!     let day = Duration::from_secs(86_400);
//!     let approval = step::wait_for_event("approval", "approved", &order, day);
//!     let verdict = if approval.is_some() { "approved" } else { "expired" };
//!     step::run("log", || println!("order {order} {verdict}"))?;
//!     Ok(format!("{order}: {verdict}\n"))
//! }
//!
//! fnhost_sdk::function!(handle);
//! ```
//!
//! # Guarantees
//!
//! - The recorded result is **exactly-once**: once [`run`] has returned a step's result, every
//!   later run of the invocation gets that same result (recording a name again keeps the
//!   first result), on whichever node runs it.
//! - The work itself is **at-least-once**: if the attempt ends after the work's side effects
//!   but before its result is committed (a trap, a timeout, the node stopping, a refused
//!   recording), the next run does the work again. Make such side effects idempotent, e.g.
//!   with the invocation id as an idempotency key.
//! - A closure that fails ([`try_run`]'s `Err`) or panics records nothing: the step runs
//!   again on the next attempt.
//!
//! # Rules
//!
//! - A name identifies one step of the invocation: unique, and the same on every run
//!   (`format!("charge-{i}")` in a loop). [`sleep`] and [`wait_for_event`] names are steps too.
//! - The code between steps runs again on every run: keep it cheap and deterministic, and put
//!   whatever has side effects or differs between runs (outbound requests, time, randomness)
//!   in a step.
//! - Only background functions have steps: elsewhere [`get`] answers `None`, [`put`] fails,
//!   and [`sleep`] / [`wait_for_event`] trap. fnhost limits the number of steps and the size
//!   of each (`max_steps`, `max_step_size`); past them, recording fails.
//! - The imports are plain synchronous calls, so steps work in both flavours; for an async
//!   handler (the `p3` flavour), [`run_async`] and [`try_run_async`] take closures returning
//!   futures.

use std::convert::Infallible;
use std::fmt;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::steps_bindings::fnhost::function::steps as wit;

/// Why a step's result could not be recorded or read back.
#[derive(Debug)]
pub struct Error {
    step: String,
    kind: ErrorKind,
}

/// What went wrong with a step; see [`Error::kind`].
#[derive(Debug)]
#[non_exhaustive]
pub enum ErrorKind {
    /// fnhost refused to record the result (past `max_steps` or `max_step_size`, or not a
    /// background function); its message says why. The work was done but nothing was
    /// recorded, so a retry does it again.
    Record(String),
    /// The closure's result did not serialize as JSON (e.g. a map with non-string keys).
    Encode(serde_json::Error),
    /// The recorded result did not deserialize as the type asked for: the function's code
    /// changed the step's type while the invocation was under way.
    Decode(serde_json::Error),
}

impl Error {
    fn new(step: &str, kind: ErrorKind) -> Self {
        Error {
            step: step.to_owned(),
            kind,
        }
    }

    /// The step's name.
    pub fn step(&self) -> &str {
        &self.step
    }

    /// What went wrong.
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let step = &self.step;
        match &self.kind {
            ErrorKind::Record(message) => write!(f, "step `{step}` not recorded: {message}"),
            ErrorKind::Encode(err) => write!(f, "step `{step}`: result is not JSON: {err}"),
            ErrorKind::Decode(err) => {
                write!(
                    f,
                    "step `{step}`: recorded result does not fit the type: {err}"
                )
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            ErrorKind::Encode(err) | ErrorKind::Decode(err) => Some(err),
            ErrorKind::Record(_) => None,
        }
    }
}

/// Why [`try_run`] failed: the closure's own error, or the step's.
#[derive(Debug)]
pub enum TryError<E> {
    /// The closure returned this error. Nothing was recorded: the step runs again on the next
    /// attempt.
    Failed(E),
    /// Recording or reading back the result failed.
    Step(Error),
}

impl<E> From<Error> for TryError<E> {
    fn from(err: Error) -> Self {
        TryError::Step(err)
    }
}

impl<E: fmt::Display> fmt::Display for TryError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TryError::Failed(err) => err.fmt(f),
            TryError::Step(err) => err.fmt(f),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for TryError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TryError::Failed(err) => err.source(),
            TryError::Step(err) => err.source(),
        }
    }
}

/// Runs step `name` once per invocation: returns its recorded result if an earlier run
/// recorded one (without calling `f`), else calls `f`, records its result and returns it.
///
/// The result is recorded as JSON, so `T` is anything serde can round-trip.
///
/// ```no_run
/// let total: u64 = fnhost_sdk::step::run("count", || 6 * 7)?;
/// # Ok::<(), fnhost_sdk::step::Error>(())
/// ```
pub fn run<T, F>(name: &str, f: F) -> Result<T, Error>
where
    T: Serialize + DeserializeOwned,
    F: FnOnce() -> T,
{
    try_run(name, || Ok::<T, Infallible>(f())).map_err(infallible)
}

/// Like [`run`] for a closure that may fail: an `Err` is returned as [`TryError::Failed`]
/// and records nothing, so the step runs again on the next attempt.
///
/// ```no_run
/// let request = fnhost_sdk::http::Request::get("https://example.com/").body(Vec::new())?;
/// let status: u16 = fnhost_sdk::step::try_run("ping", || {
///     fnhost_sdk::fetch(request).map(|response| response.status().as_u16())
/// })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn try_run<T, E, F>(name: &str, f: F) -> Result<T, TryError<E>>
where
    T: Serialize + DeserializeOwned,
    F: FnOnce() -> Result<T, E>,
{
    try_run_in(&Host, name, f)
}

/// [`run`] for a closure returning a future (the `p3` flavour's async handlers).
///
/// ```no_run
/// # async fn handle() -> Result<(), fnhost_sdk::step::Error> {
/// let answer: u32 = fnhost_sdk::step::run_async("answer", || async { 42 }).await?;
/// # Ok(())
/// # }
/// ```
pub async fn run_async<T, F, Fut>(name: &str, f: F) -> Result<T, Error>
where
    T: Serialize + DeserializeOwned,
    F: FnOnce() -> Fut,
    Fut: Future<Output = T>,
{
    try_run_async(name, || async { Ok::<T, Infallible>(f().await) })
        .await
        .map_err(infallible)
}

/// [`try_run`] for a closure returning a future (the `p3` flavour's async handlers).
pub async fn try_run_async<T, E, F, Fut>(name: &str, f: F) -> Result<T, TryError<E>>
where
    T: Serialize + DeserializeOwned,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    if let Some(value) = recorded(&Host, name)? {
        return Ok(value);
    }
    let value = f().await.map_err(TryError::Failed)?;
    record(&Host, name, &value)?;
    Ok(value)
}

/// Sleeps for `duration` from the first time this step is reached: the attempt ends, and the
/// invocation runs again once the time has come, when this returns. Each run computes "now +
/// `duration`" anew, but fnhost keeps the first run's wake time, so the sleep happens once.
pub fn sleep(name: &str, duration: Duration) {
    wit::sleep_until(name, wake_ms(SystemTime::now(), duration));
}

/// Sleeps until `when`: returns at once if it has passed, else the attempt ends and the
/// invocation runs again at `when`, when this returns. The first run's `when` is kept as step
/// `name` (decimal milliseconds since the Unix epoch).
pub fn sleep_until(name: &str, when: SystemTime) {
    wit::sleep_until(name, millis_since_epoch(when));
}

/// Waits for event `event` with key `key` (`POST /.fnhost/events/EVENT?key=KEY`) sent after
/// the wait began: the attempt ends, and the invocation runs again when the event arrives —
/// this then returns its payload, recorded as step `name` — or `timeout` after the wait
/// began, when this returns `None`.
pub fn wait_for_event(name: &str, event: &str, key: &str, timeout: Duration) -> Option<Vec<u8>> {
    wit::wait_for_event(name, event, key, millis_ceil(timeout))
}

/// Step `name`'s recorded bytes, if a run of this invocation recorded any (a sleep's step
/// holds its wake time, decimal milliseconds since the Unix epoch).
pub fn get(name: &str) -> Option<Vec<u8>> {
    wit::get(name)
}

/// Records `value` as step `name`'s result, committed before this returns. Recording a name
/// again keeps the first value.
pub fn put(name: &str, value: &[u8]) -> Result<(), Error> {
    wit::put(name, value).map_err(|message| Error::new(name, ErrorKind::Record(message)))
}

fn infallible(err: TryError<Infallible>) -> Error {
    match err {
        TryError::Failed(never) => match never {},
        TryError::Step(err) => err,
    }
}

/// Where step results live: the host's `steps` interface, or a map in tests.
trait Store {
    fn get(&self, name: &str) -> Option<Vec<u8>>;
    fn put(&self, name: &str, value: &[u8]) -> Result<(), Error>;
}

/// The host's `fnhost:function/steps` imports.
struct Host;

impl Store for Host {
    fn get(&self, name: &str) -> Option<Vec<u8>> {
        get(name)
    }

    fn put(&self, name: &str, value: &[u8]) -> Result<(), Error> {
        put(name, value)
    }
}

/// [`try_run`] over `store`.
fn try_run_in<T, E>(
    store: &impl Store,
    name: &str,
    f: impl FnOnce() -> Result<T, E>,
) -> Result<T, TryError<E>>
where
    T: Serialize + DeserializeOwned,
{
    if let Some(value) = recorded(store, name)? {
        return Ok(value);
    }
    let value = f().map_err(TryError::Failed)?;
    record(store, name, &value)?;
    Ok(value)
}

/// Step `name`'s recorded result, deserialized.
fn recorded<T: DeserializeOwned>(store: &impl Store, name: &str) -> Result<Option<T>, Error> {
    let Some(bytes) = store.get(name) else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|err| Error::new(name, ErrorKind::Decode(err)))
}

/// Records `value` as step `name`'s result, serialized.
fn record<T: Serialize>(store: &impl Store, name: &str, value: &T) -> Result<(), Error> {
    let bytes =
        serde_json::to_vec(value).map_err(|err| Error::new(name, ErrorKind::Encode(err)))?;
    store.put(name, &bytes)
}

/// `duration` after `now`, in milliseconds since the Unix epoch (saturating).
fn wake_ms(now: SystemTime, duration: Duration) -> u64 {
    millis_since_epoch(now).saturating_add(millis_ceil(duration))
}

/// Milliseconds since the Unix epoch, rounded up so a wake time is never early; `0` before
/// the epoch, `u64::MAX` past its range.
fn millis_since_epoch(when: SystemTime) -> u64 {
    when.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, millis_ceil)
}

/// Whole milliseconds, rounded up (saturating at `u64::MAX`).
fn millis_ceil(duration: Duration) -> u64 {
    let millis = duration.as_nanos().div_ceil(1_000_000);
    u64::try_from(millis).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};
    use std::collections::BTreeMap;

    use super::*;

    /// A store in memory that, like the host, keeps the first value recorded for a name.
    #[derive(Default)]
    struct Memory {
        steps: RefCell<BTreeMap<String, Vec<u8>>>,
        refuse: Option<&'static str>,
    }

    impl Store for Memory {
        fn get(&self, name: &str) -> Option<Vec<u8>> {
            self.steps.borrow().get(name).cloned()
        }

        fn put(&self, name: &str, value: &[u8]) -> Result<(), Error> {
            if let Some(message) = self.refuse {
                return Err(Error::new(name, ErrorKind::Record(message.to_owned())));
            }
            let mut steps = self.steps.borrow_mut();
            steps
                .entry(name.to_owned())
                .or_insert_with(|| value.to_vec());
            Ok(())
        }
    }

    #[test]
    fn a_recorded_step_is_not_run_again() {
        let store = Memory::default();
        let calls = Cell::new(0);
        let work = || {
            calls.set(calls.get() + 1);
            Ok::<_, Infallible>((String::from("one"), vec![1u32, 2]))
        };
        let first = try_run_in(&store, "a", work).unwrap();
        let second = try_run_in(&store, "a", work).unwrap();
        assert_eq!(first, second);
        assert_eq!(calls.get(), 1);
        assert_eq!(store.get("a").unwrap(), br#"["one",[1,2]]"#);
    }

    #[test]
    fn a_failed_step_records_nothing_and_runs_again() {
        let store = Memory::default();
        let failed = try_run_in::<u8, _>(&store, "b", || Err("down"));
        assert!(matches!(failed, Err(TryError::Failed("down"))));
        assert_eq!(store.get("b"), None);
        assert_eq!(try_run_in(&store, "b", || Ok::<u8, &str>(7)).unwrap(), 7);
    }

    #[test]
    fn a_refused_recording_names_the_step() {
        let store = Memory {
            refuse: Some("past max_steps (100)"),
            ..Memory::default()
        };
        let err = match try_run_in(&store, "c", || Ok::<u8, Infallible>(1)) {
            Err(TryError::Step(err)) => err,
            other => panic!("expected a step error, got {other:?}"),
        };
        assert_eq!(err.step(), "c");
        assert!(matches!(err.kind(), ErrorKind::Record(_)));
        assert_eq!(
            err.to_string(),
            "step `c` not recorded: past max_steps (100)"
        );
    }

    #[test]
    fn a_recorded_value_of_another_type_is_a_decode_error() {
        let store = Memory::default();
        store.put("d", b"\"text\"").unwrap();
        let err = recorded::<u32>(&store, "d").unwrap_err();
        assert!(matches!(err.kind(), ErrorKind::Decode(_)));
        assert!(
            err.to_string()
                .starts_with("step `d`: recorded result does not fit")
        );
    }

    #[test]
    fn unit_and_options_round_trip() {
        let store = Memory::default();
        record(&store, "unit", &()).unwrap();
        record(&store, "none", &None::<u8>).unwrap();
        assert_eq!(recorded::<()>(&store, "unit").unwrap(), Some(()));
        assert_eq!(recorded::<Option<u8>>(&store, "none").unwrap(), Some(None));
        assert_eq!(recorded::<u8>(&store, "missing").unwrap(), None);
    }

    #[test]
    fn a_map_with_non_string_keys_is_an_encode_error() {
        let store = Memory::default();
        let value = BTreeMap::from([((1u8, 2u8), 3u8)]);
        let err = record(&store, "e", &value).unwrap_err();
        assert!(matches!(err.kind(), ErrorKind::Encode(_)));
        assert_eq!(store.get("e"), None);
    }

    #[test]
    fn wake_times_round_up_and_saturate() {
        let epoch = SystemTime::UNIX_EPOCH;
        assert_eq!(millis_ceil(Duration::from_micros(1)), 1);
        assert_eq!(millis_ceil(Duration::from_millis(5)), 5);
        assert_eq!(millis_ceil(Duration::MAX), u64::MAX);
        assert_eq!(millis_since_epoch(epoch + Duration::from_micros(1_500)), 2);
        assert_eq!(millis_since_epoch(epoch - Duration::from_secs(1)), 0);
        let now = epoch + Duration::from_millis(1_000);
        assert_eq!(wake_ms(now, Duration::from_millis(250)), 1_250);
        assert_eq!(wake_ms(now, Duration::MAX), u64::MAX);
    }
}
