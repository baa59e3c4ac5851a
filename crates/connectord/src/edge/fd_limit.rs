//! Fitting the connection cap under the process's file descriptor limit.
//!
//! Many service managers start processes with a soft limit of 1024, below the
//! default cap; a cap above the limit would turn into `accept` failing with
//! "too many open files" for everyone. So at start the soft limit is raised
//! as far as the cap needs (up to the hard limit, as Go's runtime does for
//! every program), and if even the hard limit is too low the cap is lowered
//! to fit, with a warning.

/// Descriptors kept for everything but client connections: the listeners,
/// the database and its journal, logs, connections to PostgreSQL and GitHub.
pub const RESERVED_FDS: u64 = 256;

/// The per-listener cap that fits `listeners` listeners with `cap`
/// connections each, after raising the soft limit if needed.
pub fn fit_connection_cap(listeners: usize, cap: usize) -> usize {
    let listeners = listeners.max(1) as u64;
    let wanted = listeners * cap as u64 + RESERVED_FDS;
    let limit = match rlimit::increase_nofile_limit(wanted) {
        Ok(limit) => limit,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read or raise the file descriptor limit");
            return cap;
        }
    };
    if limit >= wanted {
        return cap;
    }
    let fitted = (limit.saturating_sub(RESERVED_FDS) / listeners).max(1) as usize;
    tracing::warn!(
        fd_limit = limit,
        max_connections = cap,
        lowered_to = fitted,
        "the file descriptor limit (ulimit -n) is too low for --max-connections: lowered it to fit"
    );
    fitted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cap_that_fits_is_kept_and_one_that_cannot_is_lowered_below_the_limit() {
        assert_eq!(fit_connection_cap(1, 16), 16);
        let (_, hard) = rlimit::Resource::NOFILE.get().unwrap();
        if hard < u64::MAX / 4 {
            let fitted = fit_connection_cap(2, hard as usize);
            assert!(
                (fitted as u64) * 2 + RESERVED_FDS <= hard,
                "{fitted} under {hard}"
            );
        }
    }
}
