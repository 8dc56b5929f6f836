//! Talking to systemd, the node's service manager, when it is PID 1: is it
//! running, what moat's units are called, and the D-Bus calls moat makes
//! (start a transient unit and wait for its job, stop one, look one up).

pub mod bus;
mod units;

use std::path::Path;
use std::time::Duration;

pub use bus::{Bus, BusError, Value};
pub use units::{scope_name, slice_path, validate_slice, SCOPE_PREFIX};

/// Whether systemd is the running service manager (`sd_booted()`): it
/// creates `/run/systemd/system` early at boot.
pub fn booted() -> bool {
    booted_at(Path::new("/"))
}

/// [`booted`] for a root other than `/` (for tests).
pub fn booted_at(root: &Path) -> bool {
    std::fs::symlink_metadata(root.join("run/systemd/system")).is_ok_and(|m| m.is_dir())
}

/// systemd's private socket, which root may use without a bus daemon (as
/// `systemctl` does).
pub const PRIVATE_SOCKET: &str = "/run/systemd/private";
/// The system bus.
pub const SYSTEM_BUS_SOCKET: &str = "/run/dbus/system_bus_socket";

const DEST: &str = "org.freedesktop.systemd1";
const MANAGER_PATH: &str = "/org/freedesktop/systemd1";
const MANAGER: &str = "org.freedesktop.systemd1.Manager";

/// How long moat waits for systemd to finish a job.
pub const JOB_TIMEOUT: Duration = Duration::from_secs(30);

/// Why talking to systemd failed.
#[derive(Debug, thiserror::Error)]
pub enum SystemdError {
    /// Neither socket could be used.
    #[error(
        "cannot reach systemd over D-Bus ({PRIVATE_SOCKET}: {private}; {SYSTEM_BUS_SOCKET}: {system})"
    )]
    Unreachable {
        /// Why the private socket failed.
        private: String,
        /// Why the system bus failed.
        system: String,
    },
    /// A call failed.
    #[error("systemd: {what}")]
    Call {
        /// What moat asked for.
        what: String,
        /// The error.
        #[source]
        error: BusError,
    },
    /// A job ended other than `done`.
    #[error("systemd: {what}: the job ended with result {result:?}{hint}")]
    Job {
        /// What the job was.
        what: String,
        /// Its result (`failed`, `canceled`, `timeout`, `dependency`, ...).
        result: String,
        /// Where to look.
        hint: &'static str,
    },
    /// systemd answered with something moat did not expect.
    #[error("systemd: {what}: unexpected answer {answer}")]
    Unexpected {
        /// What moat asked for.
        what: String,
        /// What came back.
        answer: String,
    },
}

impl SystemdError {
    /// The D-Bus error name, when systemd refused a call.
    pub fn remote_name(&self) -> Option<&str> {
        match self {
            SystemdError::Call { error, .. } => error.remote_name(),
            _ => None,
        }
    }
}

/// A connection to systemd's manager.
#[derive(Debug)]
pub struct Systemd {
    bus: Bus,
}

impl Systemd {
    /// Connects: the private socket first (root, no bus daemon needed),
    /// then the system bus, as `systemctl` does.
    pub fn connect() -> Result<Systemd, SystemdError> {
        let private = match Bus::connect(Path::new(PRIVATE_SOCKET), false) {
            Ok(bus) => return Ok(Systemd { bus }),
            Err(e) => error_chain(&e),
        };
        let mut bus = Bus::connect(Path::new(SYSTEM_BUS_SOCKET), true).map_err(|e| {
            SystemdError::Unreachable {
                private,
                system: error_chain(&e),
            }
        })?;
        // A bus daemon only routes the signals a client asked for.
        bus.call(
            "org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus",
            "AddMatch",
            vec![Value::Str(format!(
                "type='signal',sender='{DEST}',path='{MANAGER_PATH}',interface='{MANAGER}',member='JobRemoved'"
            ))],
        )
        .map_err(|error| SystemdError::Call {
            what: "subscribing to JobRemoved".into(),
            error,
        })?;
        Ok(Systemd { bus })
    }

    /// A client over an existing connection (for tests).
    pub fn over(bus: Bus) -> Systemd {
        Systemd { bus }
    }

    fn manager(
        &mut self,
        what: impl Into<String>,
        member: &str,
        body: Vec<Value>,
    ) -> Result<Vec<Value>, SystemdError> {
        self.bus
            .call(DEST, MANAGER_PATH, MANAGER, member, body)
            .map_err(|error| SystemdError::Call {
                what: what.into(),
                error,
            })
    }

    /// Waits for the end of job `job` and checks that it is `done`.
    fn wait_job(&mut self, what: &str, job: &str) -> Result<(), SystemdError> {
        let m = self
            .bus
            .wait_signal(&format!("the end of job {job}"), JOB_TIMEOUT, |m| {
                m.member.as_deref() == Some("JobRemoved")
                    && m.interface.as_deref() == Some(MANAGER)
                    && m.body.get(1).and_then(Value::as_str) == Some(job)
            })
            .map_err(|error| SystemdError::Call {
                what: format!("{what}: waiting for its job"),
                error,
            })?;
        let result = m.body.get(3).and_then(Value::as_str).unwrap_or("");
        if result == "done" {
            return Ok(());
        }
        Err(SystemdError::Job {
            what: what.to_owned(),
            result: result.to_owned(),
            hint: " (journalctl -b shows why)",
        })
    }

    /// Starts the transient unit `name` with `properties` (`(name, value)`
    /// pairs) in mode `fail`, and waits until its start job is done.
    pub fn start_transient(
        &mut self,
        name: &str,
        properties: Vec<(&str, Value)>,
    ) -> Result<(), SystemdError> {
        let what = format!("starting transient unit {name}");
        let props = properties
            .into_iter()
            .map(|(k, v)| Value::Struct(vec![Value::Str(k.to_owned()), Value::variant(v)]))
            .collect();
        let reply = self.manager(
            what.clone(),
            "StartTransientUnit",
            vec![
                Value::Str(name.to_owned()),
                Value::Str("fail".into()),
                Value::Array("(sv)".into(), props),
                Value::Array("(sa(sv))".into(), vec![]),
            ],
        )?;
        let job = job_path(&what, &reply)?;
        self.wait_job(&what, &job)
    }

    /// Stops unit `name` and waits for the stop job. `Ok(false)` when no
    /// such unit is loaded (nothing to stop).
    pub fn stop_unit(&mut self, name: &str) -> Result<bool, SystemdError> {
        let what = format!("stopping {name}");
        let reply = match self.manager(
            what.clone(),
            "StopUnit",
            vec![Value::Str(name.to_owned()), Value::Str("replace".into())],
        ) {
            Ok(r) => r,
            Err(e) if e.remote_name() == Some("org.freedesktop.systemd1.NoSuchUnit") => {
                return Ok(false)
            }
            Err(e) => return Err(e),
        };
        let job = job_path(&what, &reply)?;
        self.wait_job(&what, &job)?;
        Ok(true)
    }

    /// Forgets a failed unit (`ResetFailedUnit`), so that its name is free
    /// and `systemctl --failed` does not list it. A unit not loaded, or not
    /// failed, is no error.
    pub fn reset_failed(&mut self, name: &str) -> Result<(), SystemdError> {
        match self.manager(
            format!("resetting the failed state of {name}"),
            "ResetFailedUnit",
            vec![Value::Str(name.to_owned())],
        ) {
            Ok(_) => Ok(()),
            Err(e) if e.remote_name() == Some("org.freedesktop.systemd1.NoSuchUnit") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The unit process `pid` belongs to: its name and object path.
    pub fn unit_of_pid(&mut self, pid: u32) -> Result<String, SystemdError> {
        let what = format!("finding the unit of process {pid}");
        let reply = self.manager(what.clone(), "GetUnitByPID", vec![Value::U32(pid)])?;
        match reply.first() {
            Some(Value::Path(p)) => Ok(p.clone()),
            other => Err(SystemdError::Unexpected {
                what,
                answer: format!("{other:?}"),
            }),
        }
    }

    /// Property `name` of `interface` on the object `path`.
    pub fn property(
        &mut self,
        path: &str,
        interface: &str,
        name: &str,
    ) -> Result<Value, SystemdError> {
        let reply = self
            .bus
            .call(
                DEST,
                path,
                "org.freedesktop.DBus.Properties",
                "Get",
                vec![
                    Value::Str(interface.to_owned()),
                    Value::Str(name.to_owned()),
                ],
            )
            .map_err(|error| SystemdError::Call {
                what: format!("reading {interface}.{name} of {path}"),
                error,
            })?;
        reply
            .first()
            .map(|v| v.unwrap_variant().clone())
            .ok_or_else(|| SystemdError::Unexpected {
                what: format!("reading {interface}.{name} of {path}"),
                answer: "an empty reply".into(),
            })
    }
}

fn job_path(what: &str, reply: &[Value]) -> Result<String, SystemdError> {
    match reply.first() {
        Some(Value::Path(p)) => Ok(p.clone()),
        other => Err(SystemdError::Unexpected {
            what: what.to_owned(),
            answer: format!("{other:?} instead of a job path"),
        }),
    }
}

/// An error and its causes on one line (a cause is left out when the
/// message already ends with it).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.ends_with(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests;
