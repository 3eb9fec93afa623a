"""Loaded by every Python process started with this folder on PYTHONPATH (the test's process and any
child it forks or spawns): records each attempt to resolve a host name or open a connection to the file
named by EDGEKIT_NETWATCH_LOG, so a test can assert that nothing tried to reach the network."""

import os
import sys

_EVENTS = {"socket.connect", "socket.getaddrinfo", "socket.gethostbyname", "socket.sendto", "socket.sendmsg"}
_LOG = os.environ.get("EDGEKIT_NETWATCH_LOG")


def _watch(event, args):
    if event in _EVENTS and _LOG:
        target = args[1] if event in ("socket.connect", "socket.sendto") and len(args) > 1 else args[:2]
        if isinstance(target, str) or (isinstance(target, tuple) and target and "/" in str(target[0])):
            return  # a Unix-domain socket stays on this machine
        with open(_LOG, "a") as handle:
            handle.write(f"pid {os.getpid()}: {event} {target!r}\n")


if _LOG:
    sys.addaudithook(_watch)
