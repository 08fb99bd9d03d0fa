"""Devices are transports: `dir:PATH`, `adb:SERIAL`, `ssh:user@host[:port]` behind one interface
(toolkit/devices/base.py), on which the install is written once."""

from __future__ import annotations

from toolkit.devices.base import Transport
from toolkit.errors import ToolkitError


def open_transport(spec: str, **ssh_options) -> Transport:
    """`dir:PATH`, `adb:SERIAL` or `ssh:user@host[:port]` (ssh_options: identity, known_hosts, accept_new_host_keys)."""
    kind, _, rest = spec.partition(":")
    if kind == "dir" and rest:
        from toolkit.devices.dir import DirTransport

        return DirTransport(rest)
    if kind == "adb" and rest:
        from toolkit.devices.adb import AdbTransport

        return AdbTransport(rest)
    if kind == "ssh" and rest:
        from toolkit.devices.ssh import SshTransport

        return SshTransport(rest, **ssh_options)
    raise ToolkitError(f"unsupported device '{spec}'", hint="use --device dir:PATH, adb:SERIAL or ssh:user@host[:port]")
