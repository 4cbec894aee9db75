"""The launchers' control channel: which nodes joined, which failed, when all are done.

Every node's ``train.distributed`` launcher connects to node rank 0's (the master's) over
TCP (``--master-addr``, ``--control-port``) before any rank starts, and stays connected
for the whole run. Messages are JSON objects, one per line:

  member -> master  hello {node, nnodes, nproc, device, resume, heartbeat_timeout, settings}, failed {failure},
                    done, beat
  master -> member  start, abort {failure}, finished, beat

So a node that never joins is named after ``--cluster-timeout``; a rank failing on one node
stops every node at once, with that rank's last lines shown everywhere; a node whose
launcher dies (its socket closes) or stops answering (a firewall dropping its packets, a
frozen machine: no word for ``heartbeat_timeout`` seconds, which every node's hello gives and
all must agree on) is named as lost; and a launcher exits 0 only once every node's ranks have succeeded.

Anything else that connects to the port (a scanner, a health check, a client of another
protocol) is hung up on: at once when it sends a line longer than MAX_LINE_BYTES, else
when it has not said hello within HELLO_TIMEOUT_S; lines that are not our JSON objects are
ignored.

One thread (selectors): the launcher starts msrun with a ``preexec_fn``, which is only
safe in a single-threaded process.
"""
from __future__ import annotations

import ipaddress
import json
import selectors
import socket
import time
from typing import Dict, List, Optional, Tuple

from ibnedge.errors import UserError

HEARTBEAT_TIMEOUT_S = 30.0  # the default of --heartbeat-timeout
BEATS_PER_TIMEOUT = 15  # a beat every 2 s by default: a few lost or late ones are no loss
HELLO_TIMEOUT_S = 10.0
# Far above the longest message (a failure with its log tail, at most 256 KiB of log read).
MAX_LINE_BYTES = 8 << 20
# What each node's hello must agree on with the master's.
_AGREED = ("nnodes", "nproc", "device", "resume", "heartbeat_timeout", "settings")

Event = Tuple[str, Optional[Dict]]  # ("failed", failure) or ("finished", None)


def resolve_address(host: str) -> str:
    """The IP address msrun makes of ``--master-addr`` (mindspore/parallel/cluster/process_entity/
    _utils.py): an IPv4 or IPv6 address (brackets allowed), or a host name's first address.
    MindSpore's C++ side takes only an IP address (MS_SCHED_HOST)."""
    bare = host.strip()
    if bare.startswith("[") and bare.endswith("]"):
        bare = bare[1:-1]
    try:
        return str(ipaddress.ip_address(bare))
    except ValueError:
        pass
    try:
        return socket.getaddrinfo(bare, None, socket.AF_UNSPEC, socket.SOCK_STREAM)[0][4][0]
    except (OSError, IndexError) as exc:
        raise RendezvousError("--master-addr %s: cannot resolve this host name (%s); give node rank 0's IP address"
                         % (host, getattr(exc, "strerror", None) or exc)) from None


def family_of(address: str) -> socket.AddressFamily:
    """The socket family of an IP address from :func:`resolve_address`."""
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def endpoint(address: str, port: int) -> str:
    """``address:port``, an IPv6 address in brackets."""
    return ("[%s]:%d" if ":" in address else "%s:%d") % (address, port)


class RendezvousError(UserError, RuntimeError):
    """The nodes could not be brought together; the message names the node and the fix."""


def lost_node(node: int, why: str) -> Dict:
    """A failure (``{node, title, log, tail}``, as the launcher reports them) of a whole node."""
    return {"node": node, "title": "node %d was lost: %s" % (node, why), "log": None, "tail": [], "lost": True}


def reported_failure(message: Dict, node: int) -> Dict:
    """The failure a ``failed`` or ``abort`` message carries, or one that says it carried none."""
    failure = message.get("failure")
    if isinstance(failure, dict) and isinstance(failure.get("title"), str):
        return failure
    return {"node": node, "title": "node %d reported a failure without describing it" % node, "log": None, "tail": []}


class _Peer:
    """One connection: buffered line-delimited JSON in, whole messages out."""

    def __init__(self, sock: socket.socket):
        sock.settimeout(10.0)  # sends of small messages; reads happen only when select says so
        self.sock = sock
        self.buffer = bytearray()
        self.node: Optional[int] = None
        self.connected = self.last_seen = time.monotonic()
        self.last_beat = 0.0

    def send(self, message: Dict) -> bool:
        try:
            self.sock.sendall(json.dumps(message).encode("utf-8") + b"\n")
            return True
        except OSError:
            return False

    def receive(self) -> Optional[List[Dict]]:
        """The whole messages that arrived; None once the other end has closed (or sent a
        line longer than any of ours: it is not one of us)."""
        try:
            data = self.sock.recv(65536)
        except (BlockingIOError, socket.timeout):
            return []
        except OSError:
            return None
        if not data:
            return None
        self.last_seen = time.monotonic()
        self.buffer += data
        if b"\n" not in data:
            return None if len(self.buffer) > MAX_LINE_BYTES else []
        *lines, self.buffer = self.buffer.split(b"\n")
        if len(self.buffer) > MAX_LINE_BYTES:
            return None
        messages = []
        for line in lines:
            try:
                message = json.loads(line.decode("utf-8"))
            except ValueError:
                continue  # not one of ours (a port scanner, a stray client)
            if isinstance(message, dict):
                messages.append(message)
        return messages

    def silent_for(self) -> float:
        return time.monotonic() - self.last_seen

    def beat_due(self, heartbeat_timeout: float) -> bool:
        """Whether it is time to send a beat (and, if so, the time of this one is noted)."""
        now = time.monotonic()
        if now - self.last_beat < heartbeat_timeout / BEATS_PER_TIMEOUT:
            return False
        self.last_beat = now
        return True

    def connected_for(self) -> float:
        return time.monotonic() - self.connected

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class Solo:
    """A single-node run: nobody to wait for or to tell."""

    def __init__(self):
        self._done = False

    def report_failure(self, failure: Dict) -> None:
        pass

    def report_done(self) -> None:
        self._done = True

    def events(self, timeout: float) -> List[Event]:
        if self._done:
            return [("finished", None)]
        time.sleep(timeout)
        return []

    def close(self) -> None:
        pass


class Master:
    """Node rank 0: gathers the nodes, relays failures to all, declares the end."""

    def __init__(self, address: str, port: int, hello: Dict, hello_timeout: float = HELLO_TIMEOUT_S):
        self.hello, self.hello_timeout = hello, hello_timeout
        self.heartbeat_timeout = float(hello["heartbeat_timeout"])
        self.nnodes = int(hello["nnodes"])
        try:
            self.server = socket.create_server((address, port), family=family_of(address))
        except OSError as exc:
            raise RendezvousError("node rank 0 cannot listen on %s (--control-port): %s; choose another port"
                                  % (endpoint(address, port), exc.strerror or exc)) from None
        self.server.setblocking(False)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.server, selectors.EVENT_READ)
        self.peers: List[_Peer] = []
        self.joined: Dict[int, _Peer] = {}
        self.done = set()

    # ----------------------------------------------------------------- gathering

    def gather(self, timeout: float) -> None:
        """Wait until every node rank has said hello; start them all."""
        deadline = time.monotonic() + timeout
        while len(self.joined) < self.nnodes - 1:
            left = deadline - time.monotonic()
            if left <= 0:
                missing = [n for n in range(1, self.nnodes) if n not in self.joined]
                raise self._abort_all(
                    "node rank%s %s did not join within %g s (--cluster-timeout); joined: node rank%s %s"
                    % ("s" if len(missing) > 1 else "", ", ".join(map(str, missing)), timeout,
                       "s" if self.joined else "", ", ".join(map(str, [0] + sorted(self.joined)))))
            for peer, messages in self._poll(min(left, 0.5)):
                if messages is None:
                    if peer.node is not None:
                        raise self._abort_all("node rank %d left before the run started" % peer.node)
                    continue
                for message in messages:
                    if message.get("type") == "hello":
                        self._admit(peer, message)
        for peer in self.joined.values():
            peer.send({"type": "start"})

    def _admit(self, peer: _Peer, hello: Dict) -> None:
        node = hello.get("node")
        if not isinstance(node, int) or not 0 < node < self.nnodes:
            raise self._abort_all("a launcher joined as node rank %r; node ranks of a %d-node run are 1..%d "
                                  "besides the master's 0" % (node, self.nnodes, self.nnodes - 1), peer)
        if node in self.joined:
            raise self._abort_all("two launchers joined as node rank %d; give every node its own --node-rank" % node,
                                  peer)
        for key in _AGREED:
            if hello.get(key) != self.hello.get(key):
                raise self._abort_all("%s; %s" % (_disagreement(node, key, hello.get(key), self.hello.get(key)),
                                                  _AGREEMENT_FIX[key]), peer)
        peer.node = node
        self.joined[node] = peer

    def _abort_all(self, reason: str, extra: Optional[_Peer] = None) -> RendezvousError:
        message = {"type": "abort", "failure": {"node": 0, "title": reason, "log": None, "tail": []}}
        for peer in set(self.peers) | ({extra} if extra else set()):
            peer.send(message)
        self.close()
        return RendezvousError(reason)

    # ----------------------------------------------------------------- running

    def report_failure(self, failure: Dict) -> None:
        self._broadcast({"type": "abort", "failure": failure})

    def report_done(self) -> None:
        self.done.add(0)

    def events(self, timeout: float) -> List[Event]:
        out: List[Event] = []
        for peer, messages in self._poll(timeout):
            if peer.node is None:  # a launcher come late: the run it wants to join has started
                if messages and any(m.get("type") == "hello" for m in messages):
                    peer.send({"type": "abort", "failure": {
                        "node": 0, "title": "the run has already started without it; restart every node", "tail": []}})
                continue
            if messages is None:
                out.append(self._fail(lost_node(peer.node, "its launcher exited or was killed")))
                continue
            for message in messages:
                kind = message.get("type")
                if kind == "failed":
                    out.append(self._fail(reported_failure(message, peer.node)))
                elif kind == "done":
                    self.done.add(peer.node)
        for peer in list(self.joined.values()):
            if peer.silent_for() > self.heartbeat_timeout:
                out.append(self._fail(lost_node(peer.node, "no word from its launcher for %g s"
                                                % self.heartbeat_timeout)))
        if not out and len(self.done) == self.nnodes:
            self._broadcast({"type": "finished"})
            out.append(("finished", None))
        return out

    def _fail(self, failure: Dict) -> Event:
        self._broadcast({"type": "abort", "failure": failure})
        return ("failed", failure)

    def _broadcast(self, message: Dict) -> None:
        for peer in self.joined.values():
            peer.send(message)

    def _poll(self, timeout: float) -> List[Tuple[_Peer, Optional[List[Dict]]]]:
        for peer in self.joined.values():
            if peer.beat_due(self.heartbeat_timeout):
                peer.send({"type": "beat"})
        found = []
        for key, _ in self.selector.select(timeout):
            if key.fileobj is self.server:
                try:
                    sock, _ = self.server.accept()
                except OSError:
                    continue
                peer = _Peer(sock)
                self.peers.append(peer)
                self.selector.register(sock, selectors.EVENT_READ, peer)
                continue
            peer = key.data
            messages = peer.receive()
            if messages is None:
                self._drop(peer)
            found.append((peer, messages))
        for peer in [p for p in self.peers if p.node is None and p.connected_for() > self.hello_timeout]:
            self._drop(peer)  # not a launcher, or one come late that was told so
        return found

    def _drop(self, peer: _Peer) -> None:
        try:
            self.selector.unregister(peer.sock)
        except (KeyError, ValueError):
            pass
        peer.close()
        if peer in self.peers:
            self.peers.remove(peer)
        if peer.node is not None:
            self.joined.pop(peer.node, None)

    def close(self, linger: float = 3.0) -> None:
        """Close, after giving the members ``linger`` seconds to read the last word and leave
        first (closing with their data unread could reset the connection before they read)."""
        deadline = time.monotonic() + linger
        while self.joined and time.monotonic() < deadline:
            self._poll(0.2)
        for peer in list(self.peers):
            self._drop(peer)
        try:
            self.selector.unregister(self.server)
        except (KeyError, ValueError):
            pass
        self.server.close()


def _disagreement(node: int, key: str, theirs, mine) -> str:
    if key == "settings" and isinstance(theirs, dict) and isinstance(mine, dict):
        differ = ["%s %r (node rank 0: %r)" % (k, theirs.get(k), mine.get(k))
                  for k in sorted(set(theirs) | set(mine)) if theirs.get(k) != mine.get(k)]
        return "node rank %d's training settings differ from node rank 0's: %s" % (node, ", ".join(differ))
    return "node rank %d has %s %r but node rank 0 has %r" % (node, key, theirs, mine)


_AGREEMENT_FIX = {
    "nnodes": "give every node the same --nnodes",
    "nproc": "give every node the same --nproc-per-node",
    "device": "give every node the same --device",
    "heartbeat_timeout": "give every node the same --heartbeat-timeout",
    "settings": "give every node the same arguments after -- (and the same --config file)",
    "resume": "--resume latest must find the same checkpoint on every node: put --output-dir on a filesystem "
              "shared by all nodes, or copy the checkpoint to the same path on each",
}


class Member:
    """Node rank > 0: joins the master, reports its ranks' fate, obeys the master's verdict."""

    def __init__(self, address: str, port: int, hello: Dict, timeout: float):
        self.node = int(hello["node"])
        self.heartbeat_timeout = float(hello["heartbeat_timeout"])
        self.address = endpoint(address, port)
        self.peer = _Peer(self._connect(address, port, timeout))
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.peer.sock, selectors.EVENT_READ)
        self.peer.send(dict(hello, type="hello"))
        self._await_start()

    def _connect(self, address: str, port: int, timeout: float) -> socket.socket:
        deadline = time.monotonic() + timeout
        while True:
            try:
                return socket.create_connection((address, port), timeout=max(0.1, min(5.0, deadline - time.monotonic())))
            except OSError as exc:
                if time.monotonic() >= deadline:
                    raise RendezvousError(
                        "node rank %d could not reach the master (node rank 0) at %s within %g s "
                        "(--cluster-timeout): %s; start node rank 0 with the same --master-addr and --control-port"
                        % (self.node, self.address, timeout, exc.strerror or exc)) from None
                time.sleep(0.5)

    def _await_start(self) -> None:
        """Until the master starts or refuses the run (it gives up on missing nodes after its
        own --cluster-timeout), or falls silent."""
        while True:
            for kind, failure in self._read(0.5):
                if kind == "start":
                    return
                if kind == "failed":
                    self.close()
                    raise RendezvousError(failure["title"] if failure.get("lost") else
                                          "the master (node rank 0) refused to start: %s" % failure["title"])

    def _read(self, timeout: float) -> List[Tuple[str, Optional[Dict]]]:
        out: List[Tuple[str, Optional[Dict]]] = []
        if self.selector.select(timeout):
            messages = self.peer.receive()
            if messages is None:
                return [("failed", lost_node(0, "the launcher of the master exited or was killed"))]
            for message in messages:
                kind = message.get("type")
                if kind == "abort":
                    out.append(("failed", reported_failure(message, 0)))
                elif kind in ("start", "finished"):
                    out.append((kind, None))
        if self.peer.silent_for() > self.heartbeat_timeout:
            out.append(("failed", lost_node(0, "no word from the launcher of the master for %g s"
                                            % self.heartbeat_timeout)))
        return out

    def report_failure(self, failure: Dict) -> None:
        self.peer.send({"type": "failed", "failure": failure})

    def report_done(self) -> None:
        self.peer.send({"type": "done"})

    def events(self, timeout: float) -> List[Event]:
        if self.peer.beat_due(self.heartbeat_timeout):
            self.peer.send({"type": "beat"})
        return [(kind, failure) for kind, failure in self._read(timeout) if kind != "start"]

    def close(self) -> None:
        self.selector.close()
        self.peer.close()
