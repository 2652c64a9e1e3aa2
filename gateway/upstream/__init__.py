"""Upstream adapters: one small interface, one module per provider."""

from gateway.upstream.base import Upstream, UpstreamClosed, UpstreamUnavailable

__all__ = ["Upstream", "UpstreamClosed", "UpstreamUnavailable"]
