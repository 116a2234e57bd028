//! The optional `fnhost:function/config` export: `describe` is called once when a component
//! loads, in a throwaway instance with a short budget, and its `settings` record is read
//! through typed bindings of the world version the component was built against: 0.1.x (no
//! `schedule`), 0.2.x, or 0.3.x (the 0.2 record; 0.3 adds the `service` world for WASI 0.3
//! HTTP). Components built against any of them keep working, whichever HTTP world they speak.

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
        }
    }
}

/// The world versions this fnhost reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WorldVersion {
    V0_1,
    /// 0.2.x and 0.3.x: one record.
    V0_2,
}

impl WorldVersion {
    /// The version of export `interface` (`fnhost:function/config@X.Y.Z`).
    fn of(interface: &str) -> anyhow::Result<WorldVersion> {
        let version = interface.split_once('@').map_or("", |(_, v)| v);
        if version.starts_with("0.1.") {
            Ok(WorldVersion::V0_1)
        } else if version.starts_with("0.2.") || version.starts_with("0.3.") {
            Ok(WorldVersion::V0_2)
        } else {
            anyhow::bail!(
                "{interface}: world version {version:?} is not supported by this fnhost \
                 (it reads fnhost:function@0.1.x to 0.3.x); upgrade fnhost or rebuild the function"
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
    fn world_versions_0_1_to_0_3_are_read_and_others_named() {
        let v = |s: &str| WorldVersion::of(s).map_err(|e| e.to_string());
        assert_eq!(v("fnhost:function/config@0.1.0"), Ok(WorldVersion::V0_1));
        assert_eq!(v("fnhost:function/config@0.1.3"), Ok(WorldVersion::V0_1));
        assert_eq!(v("fnhost:function/config@0.2.0"), Ok(WorldVersion::V0_2));
        assert_eq!(v("fnhost:function/config@0.3.0"), Ok(WorldVersion::V0_2));
        let e = v("fnhost:function/config@0.4.0").unwrap_err();
        assert!(
            e.contains("\"0.4.0\"") && e.contains("0.1.x to 0.3.x"),
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
            }
        );
    }
}
