//! `pith-agent`: the agent daemon (see the library, `pith_agent::main`).

/// The static (musl) build allocates through dlmalloc: musl's own malloc hands
/// every freed page group back to the kernel, so a container's create to remove
/// cost a few hundred mmap/munmap pairs in the agent, each munmap a TLB flush on
/// the other CPUs, and as many page faults again.
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOC: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

fn main() {
    pith_agent::main()
}
