//! One rtnetlink connection on the agent's tokio runtime, and the two kinds of
//! exchange the network code needs: a request the kernel acknowledges, and a
//! dump. Messages are built from `netlink-packet-route` types by the callers.

use futures_util::StreamExt;
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST};
use rtnetlink::packet_route::RouteNetlinkMessage;

use super::NetError;

/// A route-netlink socket whose receive loop runs as a task of the agent's runtime.
pub struct Nl {
    handle: rtnetlink::Handle,
}

impl Nl {
    /// Opens the socket (in the agent's network namespace) and spawns its loop.
    pub fn connect() -> Result<Nl, NetError> {
        let (conn, handle, _events) = rtnetlink::new_connection()
            .map_err(|e| NetError::Internal(format!("socket(AF_NETLINK, NETLINK_ROUTE): {e}")))?;
        tokio::spawn(conn);
        Ok(Nl { handle })
    }

    /// Sends `msg` with `NLM_F_REQUEST | NLM_F_ACK | flags` and waits for the
    /// kernel's answer; a negative answer is [`NetError::Netlink`] naming `op`.
    pub async fn ack(&self, msg: RouteNetlinkMessage, flags: u16, op: impl FnOnce() -> String) -> Result<(), NetError> {
        let mut req = NetlinkMessage::from(msg);
        req.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        let mut handle = self.handle.clone();
        let mut resp = match handle.request(req) {
            Ok(r) => r,
            // The only error here is a closed connection (rtnetlink's RequestFailed).
            Err(_) => return Err(NetError::Internal(format!("{}: netlink connection closed", op()))),
        };
        while let Some(m) = resp.next().await {
            if let NetlinkPayload::Error(err) = m.payload {
                if let Some(code) = err.code {
                    return Err(NetError::Netlink {
                        op: op(),
                        errno: -code.get(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Sends a dump request and collects every message of the answer.
    pub async fn dump(&self, msg: RouteNetlinkMessage, what: &str) -> Result<Vec<RouteNetlinkMessage>, NetError> {
        let mut req = NetlinkMessage::from(msg);
        req.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        let mut handle = self.handle.clone();
        let mut resp = handle
            .request(req)
            .map_err(|_| NetError::Internal(format!("dump {what}: netlink connection closed")))?;
        let mut out = Vec::new();
        while let Some(m) = resp.next().await {
            match m.payload {
                NetlinkPayload::InnerMessage(inner) => out.push(inner),
                NetlinkPayload::Error(err) => {
                    if let Some(code) = err.code {
                        return Err(NetError::Netlink {
                            op: format!("dump {what}"),
                            errno: -code.get(),
                        });
                    }
                }
                _ => {}
            }
        }
        Ok(out)
    }
}
