//! pith's wire protocol: the Kata Containers agent protocol (package `grpc`,
//! services `grpc.AgentService` and `grpc.Health`), pith's own package `pith`
//! (negotiation and extensions), and the API levels that gate them; plus what
//! both ends of the wire share: transport addresses ([`addr`]) and the
//! conversion between the wire OCI spec and `oci_spec`'s ([`oci_convert`]).
//!
//! The code is generated at build time from `protos/` by `ttrpc-codegen`.

pub mod addr;
pub mod levels;
pub mod oci_convert;

macro_rules! generated {
    ($($name:ident),* $(,)?) => {$(
        #[allow(unknown_lints, clippy::all, clippy::pedantic, unused_attributes, dead_code, missing_docs,
                non_camel_case_types, non_snake_case, non_upper_case_globals, trivial_casts,
                unsafe_code, unused_imports, unused_results, unused_mut, deprecated)]
        #[rustfmt::skip]
        #[doc = concat!("Generated from `protos/", stringify!($name), "`.")]
        pub mod $name { include!(concat!(env!("OUT_DIR"), "/", stringify!($name), ".rs")); }
    )*};
}

generated!(
    agent,
    agent_ttrpc,
    health,
    health_ttrpc,
    oci,
    types,
    csi,
    pith,
    pith_ttrpc
);
