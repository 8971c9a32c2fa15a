//! One-off questions to Sentinel outside the watcher: where a group's master is now. The
//! migration coordinator asks before each window and after a failed move, so it follows a
//! failover of the source or the target.

use std::sync::Arc;
use std::time::Duration;

use redis_protocol::resp2::types::BytesFrame;

use super::resp::{Conn, text};

/// Asks the sentinels in turn for `name`'s master (`SENTINEL get-master-addr-by-name`); the
/// first answer wins.
pub async fn master_addr(
    sentinels: &[String],
    password: Option<&str>,
    tls: Option<&Arc<rustls::ClientConfig>>,
    name: &str,
    timeout: Duration,
) -> Result<String, String> {
    let mut last = format!("no sentinel configured to ask for the master of {name}");
    for s in sentinels {
        let asked = async {
            let mut c = Conn::open(s, password, tls, timeout).await?;
            c.call(&[b"SENTINEL", b"get-master-addr-by-name", name.as_bytes()]).await
        };
        match tokio::time::timeout(timeout, asked).await {
            Ok(Ok(BytesFrame::Array(parts))) if parts.len() == 2 => {
                if let (Some(h), Some(Ok(p))) =
                    (text(&parts[0]), text(&parts[1]).map(str::parse::<u16>))
                {
                    return Ok(crate::config::join_host_port(h, p));
                }
                last = format!("sentinel {s} gave a malformed address for {name}");
            }
            Ok(Ok(BytesFrame::Null)) | Ok(Ok(BytesFrame::Array(_))) => {
                last = format!("sentinel {s} does not monitor a master named {name}");
            }
            Ok(Ok(other)) => last = format!("sentinel {s} answered {other:?} for {name}"),
            Ok(Err(e)) => last = format!("sentinel {s}: {e}"),
            Err(_) => last = format!("sentinel {s} did not answer within {timeout:?}"),
        }
    }
    Err(last)
}
