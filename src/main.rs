fn main() -> std::process::ExitCode {
    one_malloc_arena();
    voltlens::cli::main()
}

/// glibc gives each thread that meets a locked allocator an arena of its own (up to 8 per core)
/// and keeps what an arena frees for that arena. Labelling frees per-feature buffers of every
/// size on rayon's threads, so each arena grows to its own worst feature: `label` on 10× the
/// rows peaked at 1.34× the RSS of 1× with glibc's default and 1.15× with one arena, at the same
/// speed on 2 threads (scripts/bench_mine.sh). `MALLOC_ARENA_MAX` in the environment wins.
fn one_malloc_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets a tunable; it runs before any thread is spawned.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
    }
}
