//! `pith-agent`: the agent daemon (see the library, `pith_agent::main`).

/// The static (musl) build allocates through dlmalloc (see `pith_agent::allocator`).
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOC: pith_agent::allocator::Global = pith_agent::allocator::Global::new();

fn main() {
    pith_agent::main()
}
