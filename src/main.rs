//! `pith-agent`: the agent daemon (see the library, `pith_agent::main`).

fn main() {
    pith_agent::main()
}
