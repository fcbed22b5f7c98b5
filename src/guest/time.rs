//! SetGuestDateTime: set the guest's wall clock from the host's.

use super::GuestError;

/// The `timespec` for `sec` seconds and `usec` microseconds since the epoch.
pub fn to_timespec(sec: i64, usec: i64) -> Result<libc::timespec, GuestError> {
    // 0 is what an unset field reads as: never move the clock back to 1970.
    if sec <= 0 {
        return Err(GuestError::InvalidArgument(format!(
            "SetGuestDateTime: {sec} is not a time to set (seconds since 1970, must be positive)"
        )));
    }
    if !(0..1_000_000).contains(&usec) {
        return Err(GuestError::InvalidArgument(format!(
            "SetGuestDateTime: microseconds {usec} not in 0..1000000"
        )));
    }
    Ok(libc::timespec {
        tv_sec: sec as _,
        tv_nsec: (usec * 1000) as libc::c_long,
    })
}

/// `clock_settime(CLOCK_REALTIME)` to `sec`.`usec`.
pub fn set_time(sec: i64, usec: i64) -> Result<(), GuestError> {
    let ts = to_timespec(sec, usec)?;
    // SAFETY: clock_settime reads a valid, initialised timespec.
    let r = unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) };
    nix::errno::Errno::result(r)
        .map(drop)
        .map_err(super::sys("clock_settime", format!("CLOCK_REALTIME, {sec}.{usec:06}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_and_validates() {
        let ts = to_timespec(1_700_000_000, 123_456).unwrap();
        assert_eq!(ts.tv_sec, 1_700_000_000);
        assert_eq!(ts.tv_nsec, 123_456_000);
        assert!(matches!(to_timespec(-1, 0), Err(GuestError::InvalidArgument(_))));
        assert!(matches!(to_timespec(0, 0), Err(GuestError::InvalidArgument(_))));
        assert!(matches!(to_timespec(1, 1_000_000), Err(GuestError::InvalidArgument(_))));
        assert!(matches!(to_timespec(1, -1), Err(GuestError::InvalidArgument(_))));
    }

    #[test]
    fn bad_values_never_reach_the_clock() {
        // No clock change happens here: validation fails first.
        let e = set_time(-5, 0).unwrap_err();
        assert_eq!(e.kind(), crate::error::ErrorKind::InvalidArgument);
    }
}
