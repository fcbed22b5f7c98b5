//! Bodies of the fuzz targets in `fuzz_targets/`, one function each. A target
//! panics only on a bug: a crash, a hang, or a broken property (stated at each).
//!
//! Handler-level fuzzing of `grpc.AgentService` waits for the sandbox's fake
//! container engine (issue 11): [`server::services`] answers every AgentService
//! and pith.Devices method after decoding its request (the generated decoders,
//! through the dispatcher), and is the one place to put the real handlers over
//! a sandbox on that engine once it exists. The services that need no engine
//! (Health, Negotiation, Introspection) run for real already.

mod parsers;
mod server;

pub use parsers::{config, device_addr, mount_options, oci_spec, uevent};
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
