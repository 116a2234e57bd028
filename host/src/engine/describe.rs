//! The optional `fnhost:function/config` export: `describe` is called once when a component
//! loads, in a throwaway instance with a short budget, and its `settings` record is read
//! through typed bindings of the world version the component was built against.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::{ComponentType, Lift};
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use super::invoke::State;
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

impl From<SettingsV0_1> for Declared {
    fn from(s: SettingsV0_1) -> Declared {
        Declared {
            background: s.background,
            paths: s.paths,
            methods: s.methods.iter().map(|m| m.to_ascii_uppercase()).collect(),
            timeout: s.timeout_ms.map(Duration::from_millis),
            memory: s.memory_mb.map(|mb| u64::from(mb) << 20),
        }
    }
}

/// Calls the `config` export's `describe` (export `interface`) once.
pub(super) async fn describe(
    engine: &Engine,
    pre: &ProxyPre<State>,
    interface: &str,
) -> anyhow::Result<Declared> {
    let version = interface.split_once('@').map_or("", |(_, v)| v);
    if !version.starts_with("0.1.") {
        anyhow::bail!(
            "{interface}: world version {version:?} is not supported by this fnhost \
             (it reads fnhost:function@0.1.x); upgrade fnhost or rebuild the function"
        );
    }
    let ctx = InvokeContext {
        id: "describe".into(),
        function: "describe".into(),
        timeout: Duration::from_secs(5),
        memory: 256 << 20,
        fuel: None,
        env: Arc::from(Vec::new()),
        outbound: Arc::from(Vec::new()),
        max_outbound: 0,
        max_log: 64 * 1024,
    };
    let mut store = engine.store(&ctx, Instant::now() + ctx.timeout);
    let call = async {
        let instance = pre.instance_pre().instantiate_async(&mut store).await?;
        let iface = instance
            .get_export_index(&mut store, None, interface)
            .ok_or_else(|| wasmtime::format_err!("no export {interface}"))?;
        let func_idx = instance
            .get_export_index(&mut store, Some(&iface), "describe")
            .ok_or_else(|| wasmtime::format_err!("{interface} has no `describe` function"))?;
        let func = instance.get_typed_func::<(), (SettingsV0_1,)>(&mut store, func_idx)?;
        let (settings,) = func.call_async(&mut store, ()).await?;
        wasmtime::Result::Ok(settings)
    };
    let settings = tokio::time::timeout(ctx.timeout, call)
        .await
        .map_err(|_| anyhow::anyhow!("`describe` did not return within {:?}", ctx.timeout))?
        .map_err(to_anyhow)?;
    Ok(settings.into())
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
