//! RPC handlers, one module per service, and the table of every service the
//! agent serves. Handlers are adapters: they turn a request into sandbox
//! calls and the result into a response. Every call goes through
//! [`Rpc::run`], which maps a failure to its status in one place
//! ([`status::status`]) and logs the call: at debug with the method, the ids,
//! the duration and the status; failures at warn.

pub(crate) mod agent;
pub(crate) mod devices;
pub(crate) mod guest;
pub(crate) mod health;
pub(crate) mod introspection;
pub(crate) mod lifecycle;
pub(crate) mod negotiation;
#[cfg(feature = "net")]
pub(crate) mod network;
pub(crate) mod ps;
pub(crate) mod stats;
pub(crate) mod status;
pub(crate) mod stdio_read;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use slog::{debug, warn, Logger};
use ttrpc::r#async::Service;

use crate::context::AgentContext;
use crate::sandbox::{Error, Sandbox};

/// What every handler shares: the sandbox, the agent's facts, the log.
pub(crate) struct Rpc {
    /// The one owner of state.
    pub sandbox: Arc<Sandbox>,
    /// Facts about the agent process.
    pub ctx: Arc<AgentContext>,
    log: Logger,
}

/// The ids a request names, for the log.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Ids<'a> {
    /// Container id.
    pub container: &'a str,
    /// Exec id.
    pub exec: &'a str,
}

impl<'a> Ids<'a> {
    /// A request naming no container.
    pub(crate) const NONE: Ids<'static> = Ids {
        container: "",
        exec: "",
    };

    /// A request naming a container.
    pub(crate) fn container(container: &'a str) -> Ids<'a> {
        Ids { container, exec: "" }
    }

    /// A request naming a process.
    pub(crate) fn process(container: &'a str, exec: &'a str) -> Ids<'a> {
        Ids { container, exec }
    }
}

/// Logs a call that never finished (the client's deadline ran out and the
/// dispatcher dropped it).
struct Unfinished<'a> {
    rpc: &'a Rpc,
    method: &'a str,
    ids: Ids<'a>,
    started: Instant,
    done: bool,
}

impl Drop for Unfinished<'_> {
    fn drop(&mut self) {
        if !self.done {
            warn!(self.rpc.log, "rpc cancelled";
                  "method" => self.method, "container" => self.ids.container, "exec_id" => self.ids.exec,
                  "duration_us" => self.started.elapsed().as_micros() as u64);
        }
    }
}

impl Rpc {
    /// The handlers' shared context.
    pub(crate) fn new(sandbox: Arc<Sandbox>, ctx: Arc<AgentContext>, log: &Logger) -> Rpc {
        Rpc {
            sandbox,
            ctx,
            log: log.new(slog::o!("subsystem" => "rpc")),
        }
    }

    /// Runs the body of call `method` (`service/method`) about `ids`: logs it,
    /// and turns a failure into its status.
    pub(crate) async fn run<T>(
        &self,
        method: &str,
        ids: Ids<'_>,
        body: impl Future<Output = Result<T, Error>>,
    ) -> ttrpc::Result<T> {
        self.run_status(method, ids, body)
            .await
            .map_err(ttrpc::Error::RpcStatus)
    }

    /// Like [`Rpc::run`], with the status itself as the error (for the
    /// stream-read fast path, which writes its own frames).
    pub(crate) async fn run_status<T>(
        &self,
        method: &str,
        ids: Ids<'_>,
        body: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, ttrpc::proto::Status> {
        let mut guard = Unfinished {
            rpc: self,
            method,
            ids,
            started: Instant::now(),
            done: false,
        };
        let result = match self.sandbox.fault().filter(|_| !serves_in_fault(method)) {
            Some(fault) => Err(fault),
            None => {
                let r = body.await;
                if changes_state(method) {
                    // On disk before the host hears of it.
                    self.sandbox.persist().await;
                }
                r
            }
        };
        guard.done = true;
        let us = guard.started.elapsed().as_micros() as u64;
        match result {
            Ok(v) => {
                debug!(self.log, "rpc";
                       "method" => method, "container" => ids.container, "exec_id" => ids.exec,
                       "duration_us" => us, "status" => "OK");
                Ok(v)
            }
            Err(e) => {
                let call = status::Call {
                    method,
                    level: self.sandbox.level(),
                };
                let st = status::status(&e, call);
                warn!(self.log, "rpc failed";
                      "method" => method, "container" => ids.container, "exec_id" => ids.exec,
                      "duration_us" => us, "status" => format!("{:?}", st.code()),
                      "kind" => e.kind().as_str(), "error" => &st.message);
                Err(st)
            }
        }
    }
}

/// Calls answered while the sandbox is in a fault (a state file that could
/// not be taken back): the agent's health and its own status.
fn serves_in_fault(method: &str) -> bool {
    // An upgrade too: a newer binary may read a file this one cannot.
    method.starts_with("grpc.Health/") || method == "pith.Introspection/Status" || method == "pith.Lifecycle/Upgrade"
}

/// Calls that cannot change what is persisted: no write after them. (The
/// exit SignalProcess causes is written when it is reaped.)
const READ_ONLY: &[&str] = &[
    "grpc.AgentService/ReadStdout",
    "grpc.AgentService/ReadStderr",
    "grpc.AgentService/WriteStdin",
    "grpc.AgentService/TtyWinResize",
    "grpc.AgentService/SignalProcess",
    "grpc.AgentService/StatsContainer",
    "grpc.AgentService/ListProcesses",
    "grpc.AgentService/GetGuestDetails",
    "grpc.AgentService/GetMetrics",
    "grpc.AgentService/GetOOMEvent",
    "grpc.AgentService/GetVolumeStats",
    "grpc.AgentService/SetGuestDateTime",
    "grpc.AgentService/ReseedRandomDev",
    "grpc.AgentService/CopyFile",
    "grpc.AgentService/ListInterfaces",
    "grpc.AgentService/ListRoutes",
    "grpc.AgentService/GetIPTables",
];

/// Whether `method` may change the persisted state (unknown methods may).
/// DestroySandbox writes its own, before it asks the agent to stop.
fn changes_state(method: &str) -> bool {
    !serves_in_fault(method) && !READ_ONLY.contains(&method) && method != "grpc.AgentService/DestroySandbox"
}

/// Every service, keyed by fully qualified name, ready for the dispatcher
/// (`pith.Lifecycle` only with an `upgrader`).
pub(crate) fn services(rpc: Arc<Rpc>, upgrader: Option<Arc<crate::upgrade::Upgrader>>) -> HashMap<String, Service> {
    let mut all = HashMap::new();
    if let Some(u) = upgrader {
        all.extend(protocols::pith_ttrpc::create_lifecycle(Arc::new(
            lifecycle::LifecycleService::new(rpc.clone(), u),
        )));
    }
    all.extend(protocols::health_ttrpc::create_health(Arc::new(
        health::HealthService::new(rpc.clone()),
    )));
    all.extend(protocols::agent_ttrpc::create_agent_service(Arc::new(
        agent::AgentServiceImpl::new(rpc.clone()),
    )));
    all.extend(protocols::pith_ttrpc::create_devices(Arc::new(
        devices::DevicesService::new(rpc.clone()),
    )));
    all.extend(protocols::pith_ttrpc::create_negotiation(Arc::new(
        negotiation::NegotiationService::new(rpc.clone()),
    )));
    all.extend(protocols::pith_ttrpc::create_introspection(Arc::new(
        introspection::IntrospectionService::new(rpc),
    )));
    all
}

/// A request the adapter could not turn into domain values.
pub(crate) fn invalid(msg: impl std::fmt::Display) -> Error {
    Error::InvalidArgument(msg.to_string())
}

/// A wire OCI spec that does not convert.
pub(crate) fn convert_err(e: protocols::oci_convert::ConvertError) -> Error {
    Error::InvalidArgument(format!("OCI spec: {e}"))
}
