"""The multi-host layout's naming and placement (deploy/local/hosts.py), without root."""

from __future__ import annotations

import ipaddress

import pytest

from deploy.local.hosts import HOSTS, Network, host_of

IFNAMSIZ = 15  # Linux interface names: at most 15 characters


def test_replicas_land_on_different_hosts() -> None:
    assert host_of("results") == "a" and host_of("results#2") == "b"
    assert host_of("documents") == "a" and host_of("documents#2") == "b"
    assert host_of("privacy") == "privacy"
    assert host_of("envoy") == "edge"
    assert host_of("trust") == host_of("masterdata") == "core"


@pytest.mark.parametrize("run_id", ["a", "2hwh4-9", "zzzzz-99"])
def test_names_fit_the_kernel_limits(run_id: str) -> None:
    net = Network(run_id=run_id, subnet=ipaddress.IPv4Network("10.200.1.0/24"))
    assert len(net.bridge) <= IFNAMSIZ
    assert all(len(net.veth(h)) <= IFNAMSIZ for h in HOSTS)


def test_two_runs_never_share_a_name() -> None:
    subnet = ipaddress.IPv4Network("10.200.1.0/24")
    one, two = Network(subnet=subnet), Network(subnet=subnet)
    assert one.run_id != two.run_id
    assert one.bridge != two.bridge
    assert not {one.namespace(h) for h in HOSTS} & {two.namespace(h) for h in HOSTS}


def test_addresses_are_distinct_and_inside_the_subnet() -> None:
    net = Network(subnet=ipaddress.IPv4Network("10.200.1.0/24"))
    addresses = [net.address(h) for h in HOSTS] + [net.gateway]
    assert len(set(addresses)) == len(addresses)
    assert all(ipaddress.IPv4Address(a) in net.subnet for a in addresses)
