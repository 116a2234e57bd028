//! Test guest: grows its memory 16 MiB at a time, touching every page, until the host's memory
//! cap stops it. Answers only if growth ever stops on its own (it should not).

use fnhost_sdk::{Request, Response};

const CHUNK: usize = 16 << 20;

fn handle(_req: Request) -> Response {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut chunk = vec![0u8; CHUNK];
        for page in chunk.chunks_mut(4096) {
            page[0] = 1;
        }
        hoard.push(std::hint::black_box(chunk));
        if hoard.len() == usize::MAX {
            break;
        }
    }
    Response::new(format!("held {} chunks\n", hoard.len()).into_bytes())
}

fnhost_sdk::function!(handle);
