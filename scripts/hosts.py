"""Hosts on one machine: network namespaces joined by veth pairs, for tests and the drill.

`Hosts(n)` makes one "main" host (the API, Redis and the object store run there) and `n` worker
hosts, each a network namespace with only its loopback and its own link:

    this machine --user link-- main --link 1-- worker host 1
                                    --link 2-- worker host 2 ...

Each link is a veth pair with a /30 of 10.<a>.<b>.x (a, b drawn at random): a worker host
reaches only the main host's address on its own link (namespaces do not forward), and this
machine, the user, only the main host's address on the user link. `cut(k)` takes worker host
k's link down (a partition); `mend(k)` brings it back. Needs root (CAP_NET_ADMIN) and `ip`;
everything is deleted by `delete()`. Stdlib only.
"""

from __future__ import annotations

import os
import random
import secrets
import shutil
import subprocess
from dataclasses import dataclass


def why_not() -> str | None:
    """Why hosts cannot be made here (a sentence), or None."""
    if shutil.which("ip") is None:
        return ("network namespaces need the `ip` command (Debian's iproute2 package: "
                "apt-get install iproute2)")
    if os.geteuid() != 0:
        return ("network namespaces need root (CAP_NET_ADMIN): run this as root, e.g. "
                "`sudo make test`")
    return None


def _ip(*args: str) -> None:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"`ip {' '.join(args)}` failed: {proc.stderr.strip()}")


@dataclass(frozen=True)
class Link:
    """A veth pair: `main_if` (address `main_addr`) in the main host (or, for the user link,
    on this machine), `far_if` (address `far_addr`) in the other namespace."""

    main_if: str
    far_if: str
    main_addr: str
    far_addr: str


class Hosts:
    """The main host and `workers` worker hosts (see the module's docstring)."""

    def __init__(self, workers: int) -> None:
        self.tag = secrets.token_hex(3)
        self.main = f"ja-{self.tag}-main"
        self.workers = [f"ja-{self.tag}-w{k}" for k in range(1, workers + 1)]
        net = f"10.{random.randint(64, 250)}.{random.randint(0, 255)}"
        self.user = Link(f"ja{self.tag}u", f"ja{self.tag}v", f"{net}.2", f"{net}.1")
        self.links = [Link(f"ja{self.tag}m{k}", f"ja{self.tag}w{k}", f"{net}.{4 * k + 1}",
                           f"{net}.{4 * k + 2}") for k in range(1, workers + 1)]
        self.made: list[str] = []

    @property
    def main_addr(self) -> str:
        """The main host's address as this machine (the user) reaches it."""
        return self.user.main_addr

    def main_addr_for(self, k: int) -> str:
        """The main host's address as worker host k (1-based) reaches it."""
        return self.links[k - 1].main_addr

    def create(self) -> Hosts:
        try:
            for ns in (self.main, *self.workers):
                _ip("netns", "add", ns)
                self.made.append(ns)
                _ip("-n", ns, "link", "set", "lo", "up")
            # the user link: this machine's end stays here, the main host's end moves there
            u = self.user
            _ip("link", "add", u.far_if, "type", "veth", "peer", "name", u.main_if)
            _ip("link", "set", u.main_if, "netns", self.main)
            _ip("addr", "add", f"{u.far_addr}/30", "dev", u.far_if)
            _ip("link", "set", u.far_if, "up")
            _ip("-n", self.main, "addr", "add", f"{u.main_addr}/30", "dev", u.main_if)
            _ip("-n", self.main, "link", "set", u.main_if, "up")
            for ns, link in zip(self.workers, self.links, strict=True):
                _ip("-n", self.main, "link", "add", link.main_if, "type", "veth", "peer",
                    "name", link.far_if, "netns", ns)
                _ip("-n", self.main, "addr", "add", f"{link.main_addr}/30", "dev", link.main_if)
                _ip("-n", ns, "addr", "add", f"{link.far_addr}/30", "dev", link.far_if)
                _ip("-n", self.main, "link", "set", link.main_if, "up")
                _ip("-n", ns, "link", "set", link.far_if, "up")
        except BaseException:
            self.delete()
            raise
        return self

    def prefix(self, ns: str) -> list[str]:
        """What to put before a command to run it on host `ns`."""
        return ["ip", "netns", "exec", ns]

    def cut(self, k: int) -> None:
        """Worker host k (1-based) loses its link: a network partition."""
        _ip("-n", self.main, "link", "set", self.links[k - 1].main_if, "down")

    def mend(self, k: int) -> None:
        _ip("-n", self.main, "link", "set", self.links[k - 1].main_if, "up")

    def delete(self) -> None:
        """Remove the namespaces (their veth pairs go with them)."""
        for ns in reversed(self.made):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        self.made.clear()
        subprocess.run(["ip", "link", "del", self.user.far_if], capture_output=True)
