//! Connection files: what the kernel binds to and which key signs messages.

use std::path::Path;

use jupyter_protocol::{Channel, ConnectionInfo, Transport};

use crate::WireError;

/// Reads the JSON connection file that Jupyter passes to the kernel
/// (`{connection_file}` in the kernelspec's argv).
pub fn read_connection_file(path: impl AsRef<Path>) -> Result<ConnectionInfo, WireError> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|source| WireError::ConnectionFileIo {
        path: path.to_owned(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| WireError::ConnectionFileFormat {
        path: path.to_owned(),
        source,
    })
}

/// The ZeroMQ endpoint of one channel, e.g. `tcp://127.0.0.1:5555`
/// (or `ipc://{ip}-{port}` for the ipc transport, as ipykernel does).
pub fn endpoint(info: &ConnectionInfo, channel: Channel) -> String {
    let port = match channel {
        Channel::Shell => info.shell_port,
        Channel::Control => info.control_port,
        Channel::Stdin => info.stdin_port,
        Channel::IOPub => info.iopub_port,
        Channel::Heartbeat => info.hb_port,
    };
    match info.transport {
        // A bare IPv6 address would make the port ambiguous.
        Transport::TCP if info.ip.contains(':') => format!("tcp://[{}]:{port}", info.ip),
        Transport::TCP => format!("tcp://{}:{port}", info.ip),
        Transport::IPC => format!("ipc://{}-{port}", info.ip),
    }
}
