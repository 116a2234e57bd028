//! Test guest: CPU-bound work. Hashes a 1 MiB buffer with FNV-1a `n` times (query `n`,
//! default 100) and answers the final checksum as 16 hex digits. Deterministic.

use fnhost_sdk::{Request, RequestExt};

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn handle(req: Request) -> String {
    let n: u32 = req.query("n").and_then(|n| n.parse().ok()).unwrap_or(100);
    let buffer: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(31) >> 3) as u8)
        .collect();
    let mut hash = FNV_OFFSET;
    for _ in 0..n {
        for &byte in std::hint::black_box(&buffer) {
            hash = (hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME);
        }
    }
    format!("{hash:016x}\n")
}

fnhost_sdk::function!(handle);
