//! The open-files limit: every client costs keyhop a descriptor, so `max_clients` only holds
//! if the process may open that many. At start the soft limit is raised as far as allowed (the
//! hard limit, or beyond it when privileged); when it still falls short, `max_clients` is
//! lowered to fit and the log says so, as Redis does, so that clients past it get
//! `-ERR max number of clients reached` rather than a connection nobody accepts.

use std::sync::OnceLock;

/// Descriptors kept for everything but clients: listeners, backend and sentinel connections,
/// dedicated (pinned) connections in use, the admin endpoint, log files.
pub const RESERVED: u64 = 256;

/// The soft open-files limit in force after [`raise`].
static LIMIT: OnceLock<u64> = OnceLock::new();

/// Raises the open-files limit towards what `max_clients` needs; returns the limit in force.
pub fn raise(max_clients: usize) -> u64 {
    *LIMIT.get_or_init(|| {
        let want = max_clients as u64 + RESERVED;
        let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit/setrlimit with a valid, properly laid out struct.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
                return u64::MAX;
            }
            if r.rlim_cur < want as libc::rlim_t {
                // Beyond the hard limit when privileged (CAP_SYS_RESOURCE); else up to it.
                let up = libc::rlimit {
                    rlim_cur: want as libc::rlim_t,
                    rlim_max: r.rlim_max.max(want as libc::rlim_t),
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &up) == 0 {
                    r = up;
                } else {
                    let to_hard = libc::rlimit { rlim_cur: r.rlim_max, rlim_max: r.rlim_max };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &to_hard) == 0 {
                        r = to_hard;
                    }
                }
            }
        }
        #[allow(clippy::unnecessary_cast)] // rlim_t is u32 on some targets
        let cur = r.rlim_cur as u64;
        cur
    })
}

/// The clients keyhop can accept under `limit` descriptors, at most `max_clients`.
pub fn clients_allowed(max_clients: usize, limit: u64) -> usize {
    let room = limit.saturating_sub(RESERVED).max(1);
    (max_clients as u64).min(room) as usize
}

/// `max_clients` as it can hold under the process's open-files limit (raised first), with a
/// warning when it had to be lowered.
pub fn effective_max_clients(max_clients: usize) -> usize {
    let limit = raise(max_clients);
    let allowed = clients_allowed(max_clients, limit);
    if allowed < max_clients {
        tracing::warn!(
            max_clients,
            allowed,
            open_files_limit = limit,
            "max_clients lowered to fit the open-files limit: raise it (ulimit -n, systemd LimitNOFILE=) to at least max_clients + 256"
        );
    }
    allowed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_fit_the_limit_minus_the_reserve() {
        assert_eq!(clients_allowed(10_000, 1_048_576), 10_000);
        assert_eq!(clients_allowed(20_000, 20_000), 20_000 - RESERVED as usize);
        assert_eq!(clients_allowed(20_000, 100), 1);
        assert_eq!(clients_allowed(5, u64::MAX), 5);
    }
}
