//! `grpc.AgentService`. Every method is declared by the generated trait; the ones
//! not overridden here answer `UNIMPLEMENTED` naming the method (see
//! `server::dispatch`). Later capabilities override them one by one.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use protobuf::well_known_types::empty::Empty;
use protocols::agent::*;
use protocols::oci_convert;
use ttrpc::r#async::TtrpcContext;

use super::{convert_err, invalid, ps, stats, Ids, Rpc};
use crate::sandbox::container::{CreateRequest, SpecDevice};
use crate::sandbox::error::Feature;
use crate::sandbox::pod::PodRequest;
use crate::sandbox::Error;

/// `grpc.AgentService/<name>`.
macro_rules! method {
    ($name:literal) => {
        concat!("grpc.AgentService/", $name)
    };
}

/// Serves `grpc.AgentService`.
pub(crate) struct AgentServiceImpl {
    rpc: Arc<Rpc>,
}

impl AgentServiceImpl {
    /// A service over the sandbox of `rpc`.
    pub(crate) fn new(rpc: Arc<Rpc>) -> Self {
        AgentServiceImpl { rpc }
    }
}

/// CreateContainer's devices as the sandbox takes them.
fn spec_devices(id: &str, list: &[Device]) -> Result<Vec<SpecDevice>, Error> {
    list.iter()
        .map(|d| {
            let addr = crate::device::spec::device_addr(d).map_err(|source| Error::Device {
                context: format!("container {id:?}: device for {}", d.container_path),
                source,
            })?;
            Ok(SpecDevice {
                container_path: d.container_path.clone(),
                addr,
            })
        })
        .collect()
}

#[async_trait]
impl protocols::agent_ttrpc::AgentService for AgentServiceImpl {
    async fn create_sandbox(&self, _ctx: &TtrpcContext, req: CreateSandboxRequest) -> ttrpc::Result<Empty> {
        self.rpc
            .run(method!("CreateSandbox"), Ids::NONE, async {
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
                self.rpc.sandbox.create_sandbox(pod).await?;
                Ok(Empty::new())
            })
            .await
    }

    async fn destroy_sandbox(&self, _ctx: &TtrpcContext, _req: DestroySandboxRequest) -> ttrpc::Result<Empty> {
        self.rpc
            .run(method!("DestroySandbox"), Ids::NONE, async {
                self.rpc.sandbox.destroy_sandbox().await?;
                Ok(Empty::new())
            })
            .await
    }

    async fn create_container(&self, _ctx: &TtrpcContext, req: CreateContainerRequest) -> ttrpc::Result<Empty> {
        let ids = Ids::process(&req.container_id, &req.exec_id);
        self.rpc
            .run(method!("CreateContainer"), ids, async {
                let spec = req
                    .OCI
                    .as_ref()
                    .ok_or_else(|| invalid("CreateContainer without OCI spec"))?;
                let spec = oci_convert::container_to_oci(spec).map_err(convert_err)?;
                let create = CreateRequest {
                    id: req.container_id.clone(),
                    exec_id: req.exec_id.clone(),
                    sandbox_pidns: req.sandbox_pidns,
                    storages: req.storages.clone(),
                    devices: spec_devices(&req.container_id, &req.devices)?,
                };
                self.rpc.sandbox.create_container(create, spec).await?;
                Ok(Empty::new())
            })
            .await
    }

    async fn start_container(&self, _ctx: &TtrpcContext, req: StartContainerRequest) -> ttrpc::Result<Empty> {
        self.rpc
            .run(method!("StartContainer"), Ids::container(&req.container_id), async {
                self.rpc.sandbox.start_container(&req.container_id).await?;
                Ok(Empty::new())
            })
            .await
    }

    async fn remove_container(&self, _ctx: &TtrpcContext, req: RemoveContainerRequest) -> ttrpc::Result<Empty> {
        self.rpc
            .run(method!("RemoveContainer"), Ids::container(&req.container_id), async {
                let timeout = Duration::from_secs(req.timeout as u64);
                self.rpc.sandbox.remove_container(&req.container_id, timeout).await?;
                Ok(Empty::new())
            })
            .await
    }

    async fn pause_container(&self, _ctx: &TtrpcContext, req: PauseContainerRequest) -> ttrpc::Result<Empty> {
        self.rpc
            .run(method!("PauseContainer"), Ids::container(&req.container_id), async {
                self.rpc.sandbox.pause_container(&req.container_id).await?;
                Ok(Empty::new())
            })
            .await
    }

    async fn resume_container(&self, _ctx: &TtrpcContext, req: ResumeContainerRequest) -> ttrpc::Result<Empty> {
        self.rpc
            .run(method!("ResumeContainer"), Ids::container(&req.container_id), async {
                self.rpc.sandbox.resume_container(&req.container_id).await?;
                Ok(Empty::new())
            })
            .await
    }

    async fn update_container(&self, _ctx: &TtrpcContext, req: UpdateContainerRequest) -> ttrpc::Result<Empty> {
        self.rpc
            .run(method!("UpdateContainer"), Ids::container(&req.container_id), async {
                // Kata: no resources is nothing to change (the container must exist).
                let Some(r) = req.resources.as_ref() else {
                    self.rpc.sandbox.container(&req.container_id)?;
                    return Ok(Empty::new());
                };
                let resources = oci_convert::resources_to_oci(r).map_err(convert_err)?;
                self.rpc.sandbox.update_container(&req.container_id, resources).await?;
                Ok(Empty::new())
            })
            .await
    }

    async fn stats_container(
        &self,
        _ctx: &TtrpcContext,
        req: StatsContainerRequest,
    ) -> ttrpc::Result<StatsContainerResponse> {
        self.rpc
            .run(method!("StatsContainer"), Ids::container(&req.container_id), async {
                let s = self.rpc.sandbox.stats(&req.container_id).await?;
                let mut r = StatsContainerResponse::new();
                r.cgroup_stats = protobuf::MessageField::some(stats::cgroup_stats(&s));
                // Kata's agent reports no network statistics here (the shim
                // takes them elsewhere): `network_stats` stays empty.
                Ok(r)
            })
            .await
    }

    async fn list_processes(
        &self,
        _ctx: &TtrpcContext,
        req: ListProcessesRequest,
    ) -> ttrpc::Result<ListProcessesResponse> {
        self.rpc
            .run(method!("ListProcesses"), Ids::container(&req.container_id), async {
                let pids = self.rpc.sandbox.container_pids(&req.container_id).await?;
                let mut r = ListProcessesResponse::new();
                r.process_list = ps::render(&pids, &req.format).map_err(invalid)?;
                Ok(r)
            })
            .await
    }

    async fn get_oom_event(&self, _ctx: &TtrpcContext, _req: GetOOMEventRequest) -> ttrpc::Result<OOMEvent> {
        self.rpc
            .run(method!("GetOOMEvent"), Ids::NONE, async {
                let id = self.rpc.sandbox.next_oom().await?;
                let mut r = OOMEvent::new();
                r.container_id = id;
                Ok(r)
            })
            .await
    }

    async fn exec_process(&self, _ctx: &TtrpcContext, req: ExecProcessRequest) -> ttrpc::Result<Empty> {
        let ids = Ids::process(&req.container_id, &req.exec_id);
        self.rpc
            .run(method!("ExecProcess"), ids, async {
                let p = req
                    .process
                    .as_ref()
                    .ok_or_else(|| invalid("ExecProcess without process"))?;
                let process = oci_convert::exec_process_to_oci(p).map_err(convert_err)?;
                self.rpc
                    .sandbox
                    .exec_process(&req.container_id, &req.exec_id, process)
                    .await?;
                Ok(Empty::new())
            })
            .await
    }

    async fn signal_process(&self, _ctx: &TtrpcContext, req: SignalProcessRequest) -> ttrpc::Result<Empty> {
        let ids = Ids::process(&req.container_id, &req.exec_id);
        self.rpc
            .run(method!("SignalProcess"), ids, async {
                self.rpc
                    .sandbox
                    .signal(&req.container_id, &req.exec_id, req.signal)
                    .await?;
                Ok(Empty::new())
            })
            .await
    }

    async fn wait_process(&self, _ctx: &TtrpcContext, req: WaitProcessRequest) -> ttrpc::Result<WaitProcessResponse> {
        let ids = Ids::process(&req.container_id, &req.exec_id);
        self.rpc
            .run(method!("WaitProcess"), ids, async {
                let exit = self.rpc.sandbox.wait(&req.container_id, &req.exec_id).await?;
                let mut r = WaitProcessResponse::new();
                r.status = exit.status();
                Ok(r)
            })
            .await
    }

    async fn write_stdin(&self, _ctx: &TtrpcContext, req: WriteStreamRequest) -> ttrpc::Result<WriteStreamResponse> {
        let ids = Ids::process(&req.container_id, &req.exec_id);
        self.rpc
            .run(method!("WriteStdin"), ids, async {
                let p = self.rpc.sandbox.process(&req.container_id, &req.exec_id)?;
                let n = p.write_stdin(&req.data).await?;
                let mut r = WriteStreamResponse::new();
                r.len = n as u32;
                Ok(r)
            })
            .await
    }

    async fn read_stdout(&self, _ctx: &TtrpcContext, req: ReadStreamRequest) -> ttrpc::Result<ReadStreamResponse> {
        let ids = Ids::process(&req.container_id, &req.exec_id);
        self.rpc
            .run(method!("ReadStdout"), ids, async {
                let p = self.rpc.sandbox.process(&req.container_id, &req.exec_id)?;
                let mut r = ReadStreamResponse::new();
                r.data = p.stdout.read(req.len as usize, "stdout").await?;
                Ok(r)
            })
            .await
    }

    async fn read_stderr(&self, _ctx: &TtrpcContext, req: ReadStreamRequest) -> ttrpc::Result<ReadStreamResponse> {
        let ids = Ids::process(&req.container_id, &req.exec_id);
        self.rpc
            .run(method!("ReadStderr"), ids, async {
                let p = self.rpc.sandbox.process(&req.container_id, &req.exec_id)?;
                let mut r = ReadStreamResponse::new();
                r.data = p.stderr.read(req.len as usize, "stderr").await?;
                Ok(r)
            })
            .await
    }

    async fn close_stdin(&self, _ctx: &TtrpcContext, req: CloseStdinRequest) -> ttrpc::Result<Empty> {
        let ids = Ids::process(&req.container_id, &req.exec_id);
        self.rpc
            .run(method!("CloseStdin"), ids, async {
                self.rpc.sandbox.close_stdin(&req.container_id, &req.exec_id).await?;
                Ok(Empty::new())
            })
            .await
    }

    async fn tty_win_resize(&self, _ctx: &TtrpcContext, req: TtyWinResizeRequest) -> ttrpc::Result<Empty> {
        let ids = Ids::process(&req.container_id, &req.exec_id);
        self.rpc
            .run(method!("TtyWinResize"), ids, async {
                let p = self.rpc.sandbox.process(&req.container_id, &req.exec_id)?;
                p.resize(req.row, req.column)?;
                Ok(Empty::new())
            })
            .await
    }

    // --- guest basics ---
    async fn get_guest_details(&self, _: &TtrpcContext, r: GuestDetailsRequest) -> ttrpc::Result<GuestDetailsResponse> {
        self.rpc
            .run(
                method!("GetGuestDetails"),
                Ids::NONE,
                super::guest::get_guest_details(&self.rpc, r),
            )
            .await
    }
    async fn set_guest_date_time(&self, _: &TtrpcContext, r: SetGuestDateTimeRequest) -> ttrpc::Result<Empty> {
        self.rpc
            .run(
                method!("SetGuestDateTime"),
                Ids::NONE,
                super::guest::set_guest_date_time(&self.rpc, r),
            )
            .await
    }
    async fn copy_file(&self, _: &TtrpcContext, r: CopyFileRequest) -> ttrpc::Result<Empty> {
        self.rpc
            .run(method!("CopyFile"), Ids::NONE, super::guest::copy_file(&self.rpc, r))
            .await
    }
    async fn reseed_random_dev(&self, _: &TtrpcContext, r: ReseedRandomDevRequest) -> ttrpc::Result<Empty> {
        self.rpc
            .run(
                method!("ReseedRandomDev"),
                Ids::NONE,
                super::guest::reseed_random_dev(&self.rpc, r),
            )
            .await
    }
    async fn online_cpu_mem(&self, _: &TtrpcContext, r: OnlineCPUMemRequest) -> ttrpc::Result<Empty> {
        self.rpc
            .run(
                method!("OnlineCPUMem"),
                Ids::NONE,
                super::guest::online_cpu_mem(&self.rpc, r),
            )
            .await
    }
    async fn mem_hotplug_by_probe(&self, _: &TtrpcContext, r: MemHotplugByProbeRequest) -> ttrpc::Result<Empty> {
        self.rpc
            .run(
                method!("MemHotplugByProbe"),
                Ids::NONE,
                super::guest::mem_hotplug_by_probe(&self.rpc, r),
            )
            .await
    }
    async fn get_metrics(&self, _: &TtrpcContext, r: GetMetricsRequest) -> ttrpc::Result<Metrics> {
        self.rpc
            .run(
                method!("GetMetrics"),
                Ids::NONE,
                super::guest::get_metrics(&self.rpc, r),
            )
            .await
    }
    async fn get_volume_stats(
        &self,
        _: &TtrpcContext,
        r: VolumeStatsRequest,
    ) -> ttrpc::Result<protocols::csi::VolumeStatsResponse> {
        self.rpc
            .run(
                method!("GetVolumeStats"),
                Ids::NONE,
                super::guest::get_volume_stats(&self.rpc, r),
            )
            .await
    }
    async fn resize_volume(&self, _: &TtrpcContext, r: ResizeVolumeRequest) -> ttrpc::Result<Empty> {
        self.rpc
            .run(
                method!("ResizeVolume"),
                Ids::NONE,
                super::guest::resize_volume(&self.rpc, r),
            )
            .await
    }
    async fn add_swap_path(&self, _: &TtrpcContext, r: AddSwapPathRequest) -> ttrpc::Result<Empty> {
        self.rpc
            .run(
                method!("AddSwapPath"),
                Ids::NONE,
                super::guest::add_swap_path(&self.rpc, r),
            )
            .await
    }
    async fn add_swap(&self, _: &TtrpcContext, r: AddSwapRequest) -> ttrpc::Result<Empty> {
        self.rpc
            .run(method!("AddSwap"), Ids::NONE, super::guest::add_swap(&self.rpc, r))
            .await
    }
    async fn update_ephemeral_mounts(&self, _: &TtrpcContext, r: UpdateEphemeralMountsRequest) -> ttrpc::Result<Empty> {
        self.rpc
            .run(
                method!("UpdateEphemeralMounts"),
                Ids::NONE,
                super::guest::update_ephemeral_mounts(&self.rpc, r),
            )
            .await
    }

    // --- what kata-agent answers when built without a feature (rpc::status) ---
    async fn mem_agent_memcg_set(&self, _: &TtrpcContext, _r: MemAgentMemcgConfig) -> ttrpc::Result<Empty> {
        self.rpc
            .run(method!("MemAgentMemcgSet"), Ids::NONE, unavailable(Feature::MemAgent))
            .await
    }
    async fn mem_agent_compact_set(&self, _: &TtrpcContext, _r: MemAgentCompactConfig) -> ttrpc::Result<Empty> {
        self.rpc
            .run(method!("MemAgentCompactSet"), Ids::NONE, unavailable(Feature::MemAgent))
            .await
    }
    async fn set_policy(&self, _: &TtrpcContext, _r: SetPolicyRequest) -> ttrpc::Result<Empty> {
        self.rpc
            .run(method!("SetPolicy"), Ids::NONE, unavailable(Feature::Policy))
            .await
    }

    // --- networking (super::network); without the `net` feature the generated
    // defaults answer UNIMPLEMENTED.
    #[cfg(feature = "net")]
    async fn update_interface(
        &self,
        _: &TtrpcContext,
        r: UpdateInterfaceRequest,
    ) -> ttrpc::Result<protocols::types::Interface> {
        self.rpc
            .run(
                method!("UpdateInterface"),
                Ids::NONE,
                super::network::update_interface(&self.rpc, r),
            )
            .await
    }
    #[cfg(feature = "net")]
    async fn update_routes(&self, _: &TtrpcContext, r: UpdateRoutesRequest) -> ttrpc::Result<Routes> {
        self.rpc
            .run(
                method!("UpdateRoutes"),
                Ids::NONE,
                super::network::update_routes(&self.rpc, r),
            )
            .await
    }
    #[cfg(feature = "net")]
    async fn list_interfaces(&self, _: &TtrpcContext, _: ListInterfacesRequest) -> ttrpc::Result<Interfaces> {
        self.rpc
            .run(
                method!("ListInterfaces"),
                Ids::NONE,
                super::network::list_interfaces(&self.rpc),
            )
            .await
    }
    #[cfg(feature = "net")]
    async fn list_routes(&self, _: &TtrpcContext, _: ListRoutesRequest) -> ttrpc::Result<Routes> {
        self.rpc
            .run(method!("ListRoutes"), Ids::NONE, super::network::list_routes(&self.rpc))
            .await
    }
    #[cfg(feature = "net")]
    async fn add_arp_neighbors(&self, _: &TtrpcContext, r: AddARPNeighborsRequest) -> ttrpc::Result<Empty> {
        self.rpc
            .run(
                method!("AddARPNeighbors"),
                Ids::NONE,
                super::network::add_arp_neighbors(&self.rpc, r),
            )
            .await
    }
    #[cfg(feature = "net")]
    async fn get_ip_tables(&self, _: &TtrpcContext, r: GetIPTablesRequest) -> ttrpc::Result<GetIPTablesResponse> {
        self.rpc
            .run(
                method!("GetIPTables"),
                Ids::NONE,
                super::network::get_ip_tables(&self.rpc, r),
            )
            .await
    }
    #[cfg(feature = "net")]
    async fn set_ip_tables(&self, _: &TtrpcContext, r: SetIPTablesRequest) -> ttrpc::Result<SetIPTablesResponse> {
        self.rpc
            .run(
                method!("SetIPTables"),
                Ids::NONE,
                super::network::set_ip_tables(&self.rpc, r),
            )
            .await
    }
}

/// The answer to a method of a feature this agent does not have.
async fn unavailable(f: Feature) -> Result<Empty, Error> {
    Err(Error::Unavailable(f))
}
