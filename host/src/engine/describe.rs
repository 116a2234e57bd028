//! The optional `fnhost:function/config` export: `describe` is called once when a component
//! loads, in a throwaway instance with a short budget, and its `settings` record is read
//! through typed bindings of the world version the component was built against: 0.1.x (no
//! `schedule`), 0.2.x, 0.3.x (the 0.2 record; 0.3 adds the `service` world for WASI 0.3
//! HTTP), 0.4.x (adds `excluded-paths` and `rate-limit`) or 0.5.x (0.4's record; 0.5 adds
//! the `steps` import). Components built against any of
//! them keep working, whichever HTTP world they speak.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::InstancePre;
use wasmtime::component::{ComponentType, Lift};

use super::state::State;
use super::{Engine, InvokeContext, to_anyhow};

/// What a component declares through its `config` export, if it has one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Declared {
    /// `background`.
    pub background: Option<bool>,
    /// `paths`.
    pub paths: Vec<String>,
    /// `methods`.
    pub methods: Vec<String>,
    /// `timeout-ms`.
    pub timeout: Option<Duration>,
    /// `memory-mb`, in bytes.
    pub memory: Option<u64>,
    /// `schedule` (world 0.2), as written; parsed by the settings merge.
    pub schedule: Option<String>,
    /// `excluded-paths` (world 0.4), as written; parsed by the settings merge.
    pub excluded_paths: Vec<String>,
    /// `rate-limit` (world 0.4), as declared; checked by the settings merge.
    pub rate_limit: Option<DeclaredRateLimit>,
}

/// A `rate-limit` a component declares (world 0.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredRateLimit {
    /// `window-limit`.
    pub window_limit: u32,
    /// `window-size-secs`.
    pub window_size: Duration,
    /// `aggregate-by`: the client address is part of the key.
    pub by_ip: bool,
    /// `aggregate-by`: the domain is part of the key.
    pub by_domain: bool,
    /// `rewrite`.
    pub rewrite: Option<String>,
}

/// `fnhost:function/config.settings` of world version 0.1.x, as the component returns it.
#[derive(ComponentType, Lift, Debug)]
#[component(record)]
struct SettingsV0_1 {
    background: Option<bool>,
    paths: Vec<String>,
    methods: Vec<String>,
    #[component(name = "timeout-ms")]
    timeout_ms: Option<u64>,
    #[component(name = "memory-mb")]
    memory_mb: Option<u32>,
}

/// `fnhost:function/config.settings` of world version 0.2.x and 0.3.x: 0.1 plus `schedule`.
#[derive(ComponentType, Lift, Debug)]
#[component(record)]
struct SettingsV0_2 {
    background: Option<bool>,
    paths: Vec<String>,
    methods: Vec<String>,
    #[component(name = "timeout-ms")]
    timeout_ms: Option<u64>,
    #[component(name = "memory-mb")]
    memory_mb: Option<u32>,
    schedule: Option<String>,
}

/// `fnhost:function/config.settings` of world version 0.4.x: 0.2 plus `excluded-paths` and
/// `rate-limit`.
#[derive(ComponentType, Lift, Debug)]
#[component(record)]
struct SettingsV0_4 {
    background: Option<bool>,
    paths: Vec<String>,
    methods: Vec<String>,
    #[component(name = "timeout-ms")]
    timeout_ms: Option<u64>,
    #[component(name = "memory-mb")]
    memory_mb: Option<u32>,
    schedule: Option<String>,
    #[component(name = "excluded-paths")]
    excluded_paths: Vec<String>,
    #[component(name = "rate-limit")]
    rate_limit: Option<RateLimitV0_4>,
}

/// `fnhost:function/config.rate-limit` (0.4.x).
#[derive(ComponentType, Lift, Debug)]
#[component(record)]
struct RateLimitV0_4 {
    #[component(name = "window-limit")]
    window_limit: u32,
    #[component(name = "window-size-secs")]
    window_size_secs: u32,
    #[component(name = "aggregate-by")]
    aggregate_by: Vec<AggregateV0_4>,
    rewrite: Option<String>,
}

/// `fnhost:function/config.aggregate` (0.4.x).
#[derive(ComponentType, Lift, Debug, Clone, Copy, PartialEq, Eq)]
#[component(enum)]
#[repr(u8)]
enum AggregateV0_4 {
    #[component(name = "ip")]
    Ip,
    #[component(name = "domain")]
    Domain,
}

impl From<SettingsV0_1> for Declared {
    fn from(s: SettingsV0_1) -> Declared {
        SettingsV0_2 {
            background: s.background,
            paths: s.paths,
            methods: s.methods,
            timeout_ms: s.timeout_ms,
            memory_mb: s.memory_mb,
            schedule: None,
        }
        .into()
    }
}

impl From<SettingsV0_2> for Declared {
    fn from(s: SettingsV0_2) -> Declared {
        Declared {
            background: s.background,
            paths: s.paths,
            methods: s.methods.iter().map(|m| m.to_ascii_uppercase()).collect(),
            timeout: s.timeout_ms.map(Duration::from_millis),
            memory: s.memory_mb.map(|mb| u64::from(mb) << 20),
            schedule: s.schedule,
            excluded_paths: Vec::new(),
            rate_limit: None,
        }
    }
}

impl From<SettingsV0_4> for Declared {
    fn from(s: SettingsV0_4) -> Declared {
        let v0_2 = SettingsV0_2 {
            background: s.background,
            paths: s.paths,
            methods: s.methods,
            timeout_ms: s.timeout_ms,
            memory_mb: s.memory_mb,
            schedule: s.schedule,
        };
        Declared {
            excluded_paths: s.excluded_paths,
            rate_limit: s.rate_limit.map(DeclaredRateLimit::from),
            ..v0_2.into()
        }
    }
}

impl From<RateLimitV0_4> for DeclaredRateLimit {
    /// An empty `aggregate-by` means both, as fnhost.toml's default.
    fn from(r: RateLimitV0_4) -> DeclaredRateLimit {
        let has = |a| r.aggregate_by.is_empty() || r.aggregate_by.contains(&a);
        DeclaredRateLimit {
            window_limit: r.window_limit,
            window_size: Duration::from_secs(r.window_size_secs.into()),
            by_ip: has(AggregateV0_4::Ip),
            by_domain: has(AggregateV0_4::Domain),
            rewrite: r.rewrite,
        }
    }
}

/// The world versions this fnhost reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WorldVersion {
    V0_1,
    /// 0.2.x and 0.3.x: one record.
    V0_2,
    V0_4,
}

impl WorldVersion {
    /// The version of export `interface` (`fnhost:function/config@X.Y.Z`).
    fn of(interface: &str) -> anyhow::Result<WorldVersion> {
        let version = interface.split_once('@').map_or("", |(_, v)| v);
        if version.starts_with("0.1.") {
            Ok(WorldVersion::V0_1)
        } else if version.starts_with("0.2.") || version.starts_with("0.3.") {
            Ok(WorldVersion::V0_2)
        } else if version.starts_with("0.4.") || version.starts_with("0.5.") {
            // 0.5 adds the `steps` import; its settings record is 0.4's.
            Ok(WorldVersion::V0_4)
        } else {
            anyhow::bail!(
                "{interface}: world version {version:?} is not supported by this fnhost \
                 (it reads fnhost:function@0.1.x to 0.5.x); upgrade fnhost or rebuild the function"
            )
        }
    }
}

/// Calls the `config` export's `describe` (export `interface`) once.
pub(super) async fn describe(
    engine: &Engine,
    pre: &InstancePre<State>,
    interface: &str,
) -> anyhow::Result<Declared> {
    let version = WorldVersion::of(interface)?;
    let ctx = InvokeContext {
        id: "describe".into(),
        function: "describe".into(),
        kind: super::CallKind::Describe,
        timeout: Duration::from_secs(5),
        memory: 256 << 20,
        fuel: None,
        env: Arc::from(Vec::new()),
        outbound: Arc::from(Vec::new()),
        max_outbound: 0,
        max_log: 64 * 1024,
        capture: None,
        deploy: None,
        warm: None,
        files: None,
        trace: crate::telemetry::Trace::none(),
        attempt: None,
        steps: None,
    };
    let mut store = engine.store(&ctx, Instant::now() + ctx.timeout);
    let call = async {
        let instance = pre.instantiate_async(&mut store).await?;
        let iface = instance
            .get_export_index(&mut store, None, interface)
            .ok_or_else(|| wasmtime::format_err!("no export {interface}"))?;
        let func_idx = instance
            .get_export_index(&mut store, Some(&iface), "describe")
            .ok_or_else(|| wasmtime::format_err!("{interface} has no `describe` function"))?;
        let declared: Declared = match version {
            WorldVersion::V0_1 => {
                let func = instance.get_typed_func::<(), (SettingsV0_1,)>(&mut store, func_idx)?;
                func.call_async(&mut store, ()).await?.0.into()
            }
            WorldVersion::V0_2 => {
                let func = instance.get_typed_func::<(), (SettingsV0_2,)>(&mut store, func_idx)?;
                func.call_async(&mut store, ()).await?.0.into()
            }
            WorldVersion::V0_4 => {
                let func = instance.get_typed_func::<(), (SettingsV0_4,)>(&mut store, func_idx)?;
                func.call_async(&mut store, ()).await?.0.into()
            }
        };
        wasmtime::Result::Ok(declared)
    };
    let settings = tokio::time::timeout(ctx.timeout, call)
        .await
        .map_err(|_| anyhow::anyhow!("`describe` did not return within {:?}", ctx.timeout))?
        .map_err(to_anyhow)?;
    Ok(settings)
}

/// The name of the component's `fnhost:function/config` export, whatever its version.
pub(super) fn find_config_export(
    engine: &wasmtime::Engine,
    component: &wasmtime::component::Component,
) -> Option<String> {
    component
        .component_type()
        .exports(engine)
        .map(|(name, _)| name)
        .find(|name| name.split('@').next() == Some("fnhost:function/config"))
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn world_versions_0_1_to_0_4_are_read_and_others_named() {
        let v = |s: &str| WorldVersion::of(s).map_err(|e| e.to_string());
        assert_eq!(v("fnhost:function/config@0.1.0"), Ok(WorldVersion::V0_1));
        assert_eq!(v("fnhost:function/config@0.1.3"), Ok(WorldVersion::V0_1));
        assert_eq!(v("fnhost:function/config@0.2.0"), Ok(WorldVersion::V0_2));
        assert_eq!(v("fnhost:function/config@0.3.0"), Ok(WorldVersion::V0_2));
        assert_eq!(v("fnhost:function/config@0.4.1"), Ok(WorldVersion::V0_4));
        assert_eq!(v("fnhost:function/config@0.5.0"), Ok(WorldVersion::V0_4));
        let e = v("fnhost:function/config@0.6.0").unwrap_err();
        assert!(
            e.contains("\"0.6.0\"") && e.contains("0.1.x to 0.5.x"),
            "{e}"
        );
    }

    #[test]
    fn a_0_1_record_declares_no_schedule() {
        let declared: Declared = SettingsV0_1 {
            background: Some(true),
            paths: vec!["/a".into()],
            methods: vec!["get".into()],
            timeout_ms: Some(1500),
            memory_mb: Some(2),
        }
        .into();
        assert_eq!(
            declared,
            Declared {
                background: Some(true),
                paths: vec!["/a".into()],
                methods: vec!["GET".into()],
                timeout: Some(Duration::from_millis(1500)),
                memory: Some(2 << 20),
                schedule: None,
                ..Declared::default()
            }
        );
    }

    #[test]
    fn a_0_4_rate_limit_with_no_aggregate_counts_by_both() {
        let limit = |by: Vec<AggregateV0_4>| {
            DeclaredRateLimit::from(RateLimitV0_4 {
                window_limit: 3,
                window_size_secs: 60,
                aggregate_by: by,
                rewrite: None,
            })
        };
        let both = limit(vec![]);
        assert_eq!((both.by_ip, both.by_domain), (true, true));
        assert_eq!(both.window_size, Duration::from_secs(60));
        let ip = limit(vec![AggregateV0_4::Ip]);
        assert_eq!((ip.by_ip, ip.by_domain), (true, false));
    }
}
