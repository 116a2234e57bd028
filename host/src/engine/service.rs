//! A WASI 0.3 call (`wasi:http/service`): the request becomes a `wasi:http/types.request`
//! resource, `wasi:http/handler.handle` runs as a component-model async task inside the store's
//! event loop, and the response it returns is handed out at once — its body streams from the
//! guest while the loop keeps running. The call ends when the store has no task left: a
//! handler that answers and then goes on working (in a task it spawned) is waited for, within
//! the same budget, which is what `waitUntil` means for a 0.3 function.
//!
//! The store, budgets and accounting are the 0.2 call's (`call`): the epoch callback stops a
//! guest spinning in wasm (wasmtime notes that the event loop cannot notice a request expiring
//! while a guest spins, so the budget is enforced from outside the loop, as for 0.2), and the
//! caller's timeout drops the whole loop when a guest is parked in a host call.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::BodyExt;
use wasmtime::Store;
use wasmtime::component::{Accessor, Resource};
use wasmtime_wasi_http::p3::Request;
use wasmtime_wasi_http::p3::bindings::http::types::{
    ErrorCode, Request as WasiRequest, Response as WasiResponse,
};
use wasmtime_wasi_http::p3::bindings::{Service, ServicePre};
use wasmtime_wasi_http::{WasiHttpCtxView, WasiHttpView};

use super::state::{Respond, State};
use crate::body::{Body, BodyError};
use crate::metrics;

/// Resolves with the outcome of reading the request body (handed to the response, which
/// reports it to the guest).
pub(super) type RequestIo =
    std::pin::Pin<Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>>;

/// Hands `request` to the instance `kept` (instantiating `pre` when there is none), sends
/// the response (or the guest's error code) to `respond`, and returns the instance once the
/// guest has no task left.
pub(super) async fn call(
    store: &mut Store<State>,
    pre: ServicePre<State>,
    kept: Option<Service>,
    request: http::Request<Bytes>,
    respond: Respond,
    function: &Arc<str>,
) -> wasmtime::Result<Service> {
    let service = match kept {
        Some(service) => service,
        None => {
            let instantiating = Instant::now();
            let span = store.data().hooks.trace().child("instantiate");
            let service = pre.instantiate_async(&mut *store).await?;
            span.end();
            metrics::instantiated(function, instantiating.elapsed());
            service
        }
    };
    store
        .run_concurrent(async |accessor| {
            let answer = handle(accessor, &service, request).await?;
            let _ = respond.send(answer);
            std::future::poll_fn(|cx| accessor.poll_no_interesting_tasks(cx)).await;
            wasmtime::Result::<()>::Ok(())
        })
        .await??;
    Ok(service)
}

/// One `handle` call: the guest's response as fnhost serves it, or the error code it
/// answered with (`Err` of the outer result is a host-side failure, ending the call).
async fn handle(
    accessor: &Accessor<State>,
    service: &Service,
    request: http::Request<Bytes>,
) -> wasmtime::Result<Answer> {
    let (resource, io) = push_request(accessor, request)?;
    let returned = service
        .wasi_http_handler()
        .call_handle(accessor, resource)
        .await?;
    answer(accessor, returned, io)
}

/// What a handler answered: the response as fnhost serves it, or its error code.
pub(super) type Answer = Result<http::Response<Body>, String>;

/// The request as a `wasi:http/types.request` in the store's table, and the future that
/// reports how reading its body went.
pub(super) fn push_request(
    accessor: &Accessor<State>,
    request: http::Request<Bytes>,
) -> wasmtime::Result<(Resource<WasiRequest>, RequestIo)> {
    let request = request.map(|bytes| {
        http_body_util::Full::new(bytes)
            .map_err(|never: Infallible| -> wasmtime_wasi_http::Error { match never {} })
    });
    accessor.with(|mut access| {
        let WasiHttpCtxView { table, hooks, .. } = access.get().http();
        let (request, io) = Request::from_http(hooks, request);
        let io: RequestIo = Box::pin(io);
        Ok((table.push(request)?, io))
    })
}

/// What `handle` returned, as fnhost serves it.
pub(super) fn answer(
    accessor: &Accessor<State>,
    returned: Result<Resource<WasiResponse>, ErrorCode>,
    io: RequestIo,
) -> wasmtime::Result<Answer> {
    let response = match returned {
        Ok(response) => response,
        Err(code) => return Ok(Err(format!("{code:?}"))),
    };
    let response = accessor.with(|mut access| {
        let response = access.get().http().table.delete(response)?;
        response.into_http(&mut access, io)
    })?;
    Ok(Ok(response.map(|body| {
        body.map_err(|e| BodyError(e.to_string())).boxed_unsync()
    })))
}
