//! Tenants isolated below the API (issue 16), played as a hostile user would
//! on a real `lb up` with the real Docker engine: replicas run confined
//! (capabilities dropped, pids and open-files limits, rotated logs,
//! no-new-privileges, optional read-only root), and the data dir with the
//! cluster's keys is private to lb's user, also after someone widened it.
//! Needs Docker and Debian's busybox-static (see tests/README.md).

//!
//! Each attack lives in its own module; `harness` holds what they share.

mod harness;

mod builds;
mod confined;
mod firewall;
mod hosts;
mod images;
mod networks;
mod private;
mod quotas;
