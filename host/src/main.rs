// The process allocator: a busy node allocates from every thread at once (HTTP lanes, attempts,
// the queue's database thread), where glibc's malloc spent a tenth of its CPU; see BENCHMARKS.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    fnhost::cli::main()
}
