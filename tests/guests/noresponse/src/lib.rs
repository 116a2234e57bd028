//! Test guest: returns from the raw WASI handler without ever setting a response.

use fnhost_sdk::wasi::http::types::{IncomingRequest, ResponseOutparam};

fn handle_raw(request: IncomingRequest, out: ResponseOutparam) {
    drop(request);
    drop(out);
}

fnhost_sdk::raw_function!(handle_raw);
