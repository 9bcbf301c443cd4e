"""Nothing a client sends crashes the server or disturbs other clients.

Random datagrams (valid, mutated, garbage) go to the listener and to a
running transfer's port, from the transfer's client and from strangers;
afterwards the server has logged no failure and still serves a file whole.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from conftest import CLIENT, Harness
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.logger import LogLevel, capturedLogs


def _strategies():
    name = "_ctftp_unit_strategies"
    if name not in sys.modules:
        path = Path(__file__).resolve().parents[1] / "unit" / "strategies.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


datagrams = _strategies().anyDatagrams
senders = st.sampled_from([CLIENT, ("10.0.0.9", 5555), (CLIENT[0], CLIENT[1] + 1)])


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    toListener=st.lists(st.tuples(datagrams, senders), max_size=8),
    toTransfer=st.lists(st.tuples(datagrams, senders), max_size=8),
)
def test_random_datagrams_never_break_the_server(tmp_path_factory, toListener, toTransfer):
    root = tmp_path_factory.mktemp("fuzz")
    h = Harness(root, allow_write=True, allow_create=True)
    data = h.write("f.bin", bytes(range(256)) * 6)
    with capturedLogs() as captured:
        h.request("f.bin", client=("10.0.0.1", 7))
        transfer = h.transferPort()
        for datagram, sender in toListener:
            h.listener.deliver(datagram, sender)
        for datagram, sender in toTransfer:
            if transfer.listening:
                transfer.deliver(datagram, sender)
        for _ in range(20):
            h.reactor.advance(1.0)
        h.request("f.bin", client=("10.0.0.2", 8))
        assert h.run(h.transferPort(), client=("10.0.0.2", 8)) == data
        h.service.stopService()
        h.reactor.advance(10)
    failures = [e for e in captured if e.get("log_failure") is not None]
    assert failures == []
    assert not [e for e in captured if e.get("log_level") == LogLevel.critical]
    assert h.reactor.getDelayedCalls() == []
