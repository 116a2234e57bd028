//! Test guest: loops forever inside wasm without calling the host (exercises epoch timeouts).
//! Prints `spinning` on stdout first, so tests can see it is running.

use fnhost_sdk::{Request, Response};

fn handle(_req: Request) -> Response {
    println!("spinning");
    let mut x: u64 = 0;
    loop {
        x = std::hint::black_box(x.wrapping_add(1));
    }
}

fnhost_sdk::function!(handle);
