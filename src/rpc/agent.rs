//! `grpc.AgentService`. Every method is declared by the generated trait; the ones
//! not overridden here answer `UNIMPLEMENTED` naming the method (see
//! `server::dispatch`). Later capabilities override them one by one.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use protobuf::well_known_types::empty::Empty;
use protocols::agent::*;
use ttrpc::r#async::TtrpcContext;

use super::{ps, stats, status};
use crate::oci_convert;
use crate::sandbox::container::CreateRequest;
use crate::sandbox::pod::PodRequest;
use crate::sandbox::{Sandbox, SandboxError};

/// Serves `grpc.AgentService`.
pub struct AgentServiceImpl {
    sandbox: Arc<Sandbox>,
    devices: Arc<crate::device::Devices>,
    #[cfg(feature = "net")]
    net: crate::net::Network,
}

impl AgentServiceImpl {
    /// A service over `sandbox`, waiting for CreateContainer's devices through `devices`.
    pub fn new(sandbox: Arc<Sandbox>, devices: Arc<crate::device::Devices>) -> Self {
        AgentServiceImpl {
            sandbox,
            devices,
            #[cfg(feature = "net")]
            net: crate::net::Network::new(),
        }
    }
}

/// The status code a sandbox error answers with.
pub fn code_of(e: &SandboxError) -> ttrpc::Code {
    match e {
        SandboxError::InvalidArgument(_) => ttrpc::Code::INVALID_ARGUMENT,
        SandboxError::NotFound(_) => ttrpc::Code::NOT_FOUND,
        SandboxError::AlreadyExists(_) => ttrpc::Code::ALREADY_EXISTS,
        SandboxError::FailedPrecondition(_) => ttrpc::Code::FAILED_PRECONDITION,
        SandboxError::Internal(_) => ttrpc::Code::INTERNAL,
    }
}

fn rpc_err(e: SandboxError) -> ttrpc::Error {
    status(code_of(&e), e)
}

fn convert_err(e: oci_convert::ConvertError) -> ttrpc::Error {
    status(ttrpc::Code::INVALID_ARGUMENT, format!("OCI spec: {e}"))
}

#[async_trait]
impl protocols::agent_ttrpc::AgentService for AgentServiceImpl {
    async fn create_sandbox(&self, _ctx: &TtrpcContext, req: CreateSandboxRequest) -> ttrpc::Result<Empty> {
        let pod = PodRequest {
            id: req.sandbox_id.clone(),
            hostname: req.hostname.clone(),
            dns: req.dns.clone(),
            sandbox_pidns: req.sandbox_pidns,
            guest_hook_path: req.guest_hook_path.clone(),
            storages: req.storages.clone(),
            kernel_modules: req
                .kernel_modules
                .iter()
                .map(|m| (m.name.clone(), m.parameters.clone()))
                .collect(),
        };
        self.sandbox.create_sandbox(pod).await.map_err(rpc_err)?;
        Ok(Empty::new())
    }

    async fn destroy_sandbox(&self, _ctx: &TtrpcContext, _req: DestroySandboxRequest) -> ttrpc::Result<Empty> {
        self.sandbox.destroy_sandbox().await.map_err(rpc_err)?;
        Ok(Empty::new())
    }

    async fn create_container(&self, _ctx: &TtrpcContext, req: CreateContainerRequest) -> ttrpc::Result<Empty> {
        let spec = req
            .OCI
            .as_ref()
            .ok_or_else(|| status(ttrpc::Code::INVALID_ARGUMENT, "CreateContainer without OCI spec"))?;
        let mut spec = oci_convert::to_oci(spec).map_err(convert_err)?;
        crate::device::spec::apply(&self.devices, &req.devices, &mut spec)
            .await
            .map_err(|e| {
                let code = if e.is_timeout() {
                    ttrpc::Code::DEADLINE_EXCEEDED
                } else {
                    ttrpc::Code::INVALID_ARGUMENT
                };
                status(code, format!("container {:?}: {e}", req.container_id))
            })?;
        let create = CreateRequest {
            id: req.container_id.clone(),
            exec_id: req.exec_id.clone(),
            sandbox_pidns: req.sandbox_pidns,
            storages: req.storages.clone(),
        };
        self.sandbox.create_container(create, spec).await.map_err(rpc_err)?;
        Ok(Empty::new())
    }

    async fn start_container(&self, _ctx: &TtrpcContext, req: StartContainerRequest) -> ttrpc::Result<Empty> {
        self.sandbox.start_container(&req.container_id).await.map_err(rpc_err)?;
        Ok(Empty::new())
    }

    async fn remove_container(&self, _ctx: &TtrpcContext, req: RemoveContainerRequest) -> ttrpc::Result<Empty> {
        let timeout = Duration::from_secs(req.timeout as u64);
        self.sandbox
            .remove_container(&req.container_id, timeout)
            .await
            .map_err(rpc_err)?;
        Ok(Empty::new())
    }

    async fn pause_container(&self, _ctx: &TtrpcContext, req: PauseContainerRequest) -> ttrpc::Result<Empty> {
        self.sandbox.pause_container(&req.container_id).await.map_err(rpc_err)?;
        Ok(Empty::new())
    }

    async fn resume_container(&self, _ctx: &TtrpcContext, req: ResumeContainerRequest) -> ttrpc::Result<Empty> {
        self.sandbox
            .resume_container(&req.container_id)
            .await
            .map_err(rpc_err)?;
        Ok(Empty::new())
    }

    async fn update_container(&self, _ctx: &TtrpcContext, req: UpdateContainerRequest) -> ttrpc::Result<Empty> {
        let r = req
            .resources
            .as_ref()
            .ok_or_else(|| status(ttrpc::Code::INVALID_ARGUMENT, "UpdateContainer without resources"))?;
        let resources = oci_convert::resources_to_oci(r).map_err(convert_err)?;
        self.sandbox
            .update_container(&req.container_id, resources)
            .await
            .map_err(rpc_err)?;
        Ok(Empty::new())
    }

    async fn stats_container(
        &self,
        _ctx: &TtrpcContext,
        req: StatsContainerRequest,
    ) -> ttrpc::Result<StatsContainerResponse> {
        let s = self.sandbox.container_stats(&req.container_id).await.map_err(rpc_err)?;
        let mut r = StatsContainerResponse::new();
        r.cgroup_stats = protobuf::MessageField::some(stats::cgroup_stats(&s));
        r.network_stats = stats::network_stats(&std::fs::read_to_string("/proc/net/dev").unwrap_or_default());
        Ok(r)
    }

    async fn list_processes(
        &self,
        _ctx: &TtrpcContext,
        req: ListProcessesRequest,
    ) -> ttrpc::Result<ListProcessesResponse> {
        let pids = self.sandbox.container_pids(&req.container_id).await.map_err(rpc_err)?;
        let mut r = ListProcessesResponse::new();
        r.process_list = ps::render(&pids, &req.format).map_err(|e| status(ttrpc::Code::INVALID_ARGUMENT, e))?;
        Ok(r)
    }

    async fn get_oom_event(&self, _ctx: &TtrpcContext, _req: GetOOMEventRequest) -> ttrpc::Result<OOMEvent> {
        let id = self.sandbox.next_oom().await.map_err(rpc_err)?;
        let mut r = OOMEvent::new();
        r.container_id = id;
        Ok(r)
    }

    async fn exec_process(&self, _ctx: &TtrpcContext, req: ExecProcessRequest) -> ttrpc::Result<Empty> {
        let p = req
            .process
            .as_ref()
            .ok_or_else(|| status(ttrpc::Code::INVALID_ARGUMENT, "ExecProcess without process"))?;
        let mut wrapper = protocols::oci::Spec::new();
        wrapper.Process = protobuf::MessageField::some(p.clone());
        let process = oci_convert::to_oci(&wrapper)
            .map_err(convert_err)?
            .process()
            .clone()
            .unwrap_or_default();
        self.sandbox
            .exec_process(&req.container_id, &req.exec_id, process)
            .await
            .map_err(rpc_err)?;
        Ok(Empty::new())
    }

    async fn signal_process(&self, _ctx: &TtrpcContext, req: SignalProcessRequest) -> ttrpc::Result<Empty> {
        self.sandbox
            .signal(&req.container_id, &req.exec_id, req.signal)
            .map_err(rpc_err)?;
        Ok(Empty::new())
    }

    async fn wait_process(&self, _ctx: &TtrpcContext, req: WaitProcessRequest) -> ttrpc::Result<WaitProcessResponse> {
        let exit = self
            .sandbox
            .wait(&req.container_id, &req.exec_id)
            .await
            .map_err(rpc_err)?;
        let mut r = WaitProcessResponse::new();
        r.status = exit.status();
        Ok(r)
    }

    async fn write_stdin(&self, _ctx: &TtrpcContext, req: WriteStreamRequest) -> ttrpc::Result<WriteStreamResponse> {
        let p = self.sandbox.process(&req.container_id, &req.exec_id).map_err(rpc_err)?;
        let n = p.write_stdin(&req.data).await.map_err(rpc_err)?;
        let mut r = WriteStreamResponse::new();
        r.len = n as u32;
        Ok(r)
    }

    async fn read_stdout(&self, _ctx: &TtrpcContext, req: ReadStreamRequest) -> ttrpc::Result<ReadStreamResponse> {
        let p = self.sandbox.process(&req.container_id, &req.exec_id).map_err(rpc_err)?;
        let mut r = ReadStreamResponse::new();
        r.data = p.stdout.read(req.len as usize, "stdout").await.map_err(rpc_err)?;
        Ok(r)
    }

    async fn read_stderr(&self, _ctx: &TtrpcContext, req: ReadStreamRequest) -> ttrpc::Result<ReadStreamResponse> {
        let p = self.sandbox.process(&req.container_id, &req.exec_id).map_err(rpc_err)?;
        let mut r = ReadStreamResponse::new();
        r.data = p.stderr.read(req.len as usize, "stderr").await.map_err(rpc_err)?;
        Ok(r)
    }

    async fn close_stdin(&self, _ctx: &TtrpcContext, req: CloseStdinRequest) -> ttrpc::Result<Empty> {
        let p = self.sandbox.process(&req.container_id, &req.exec_id).map_err(rpc_err)?;
        p.close_stdin().await;
        Ok(Empty::new())
    }

    async fn tty_win_resize(&self, _ctx: &TtrpcContext, req: TtyWinResizeRequest) -> ttrpc::Result<Empty> {
        let p = self.sandbox.process(&req.container_id, &req.exec_id).map_err(rpc_err)?;
        p.resize(req.row, req.column).map_err(rpc_err)?;
        Ok(Empty::new())
    }

    // --- guest basics ---
    async fn get_guest_details(&self, _: &TtrpcContext, r: GuestDetailsRequest) -> ttrpc::Result<GuestDetailsResponse> {
        super::guest::get_guest_details(r).await
    }
    async fn set_guest_date_time(&self, _: &TtrpcContext, r: SetGuestDateTimeRequest) -> ttrpc::Result<Empty> {
        super::guest::set_guest_date_time(r).await
    }
    async fn copy_file(&self, _: &TtrpcContext, r: CopyFileRequest) -> ttrpc::Result<Empty> {
        super::guest::copy_file(r).await
    }
    async fn reseed_random_dev(&self, _: &TtrpcContext, r: ReseedRandomDevRequest) -> ttrpc::Result<Empty> {
        super::guest::reseed_random_dev(r).await
    }
    async fn online_cpu_mem(&self, _: &TtrpcContext, r: OnlineCPUMemRequest) -> ttrpc::Result<Empty> {
        super::guest::online_cpu_mem(r).await
    }

    // --- networking (super::network)
    #[cfg(feature = "net")]
    async fn update_interface(
        &self,
        _: &TtrpcContext,
        r: UpdateInterfaceRequest,
    ) -> ttrpc::Result<protocols::types::Interface> {
        super::network::update_interface(&self.net, &self.devices, r).await
    }
    #[cfg(feature = "net")]
    async fn update_routes(&self, _: &TtrpcContext, r: UpdateRoutesRequest) -> ttrpc::Result<Routes> {
        super::network::update_routes(&self.net, r).await
    }
    #[cfg(feature = "net")]
    async fn list_interfaces(&self, _: &TtrpcContext, _: ListInterfacesRequest) -> ttrpc::Result<Interfaces> {
        super::network::list_interfaces(&self.net).await
    }
    #[cfg(feature = "net")]
    async fn list_routes(&self, _: &TtrpcContext, _: ListRoutesRequest) -> ttrpc::Result<Routes> {
        super::network::list_routes(&self.net).await
    }
    #[cfg(feature = "net")]
    async fn add_arp_neighbors(&self, _: &TtrpcContext, r: AddARPNeighborsRequest) -> ttrpc::Result<Empty> {
        super::network::add_arp_neighbors(&self.net, r).await
    }
    #[cfg(feature = "net")]
    async fn get_ip_tables(&self, _: &TtrpcContext, r: GetIPTablesRequest) -> ttrpc::Result<GetIPTablesResponse> {
        super::network::get_ip_tables(&self.net, self.sandbox.reaper(), r).await
    }
    #[cfg(feature = "net")]
    async fn set_ip_tables(&self, _: &TtrpcContext, r: SetIPTablesRequest) -> ttrpc::Result<SetIPTablesResponse> {
        super::network::set_ip_tables(&self.net, self.sandbox.reaper(), r).await
    }
}
