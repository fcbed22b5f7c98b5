//! Bodies of the fuzz targets in `fuzz_targets/`, one function each. A target
//! panics only on a bug: a crash, a hang, or a broken property (stated at each).
//!
//! The agent's insides come through `pith_agent::fuzzing` (its `fuzzing`
//! feature), nothing else. [`server::services`] answers every AgentService and
//! pith.Devices method after decoding its request (the generated decoders,
//! through the dispatcher); the services that need no engine (Health,
//! Negotiation, Introspection) run for real, over a sandbox on the unit tests'
//! fake container engine. Handler-level fuzzing of `grpc.AgentService` is the
//! next step and the one place for it is [`server::services`]: the real
//! handlers over that sandbox, with calls that wait for a process's exit ended
//! by the target (the fake engine's processes exit only when told).

mod parsers;
mod server;

pub use parsers::{config, device_addr, mount_options, oci_spec, persist_state, uevent};
pub use server::{connection, frame, request_input, requests};

/// A current-thread runtime per fuzzing thread (libFuzzer runs one input at a time).
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    thread_local! {
        static RT: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("tokio runtime");
    }
    RT.with(|rt| rt.block_on(f))
}
