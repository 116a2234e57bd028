//! Test guest: loops forever inside wasm without calling the host (exercises epoch timeouts).

use fnhost_sdk::{Request, Response};

fn handle(_req: Request) -> Response {
    let mut x: u64 = 0;
    loop {
        x = std::hint::black_box(x.wrapping_add(1));
    }
}

fnhost_sdk::function!(handle);
