//! rustjail: turns an OCI runtime spec into a running container.
//!
//! The container engine lands with its own issue ("rustjail: OCI containers with
//! namespaces and cgroups"); until then this crate only holds the workspace slot so
//! the agent, the protocols and the container library build and version together.
