"""The MCP chat loop's turns for a model group: each turn is routed as the group routes any request (a deployment
by the strategy, the next one when it fails before its first byte, breakers told), so a client gets the MCP tools
whether its model is one provider's or a group's. Each turn is a new choice: a loop's turns may be served by
different deployments, and each sees the conversation so far.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gateway.api.groups import Deployments, measure
from gateway.dialects.openai import without_empty_messages
from gateway.exchange import Exchange
from gateway.mcp import loop
from gateway.routing.deployments import Member
from gateway.telemetry.scanners import JsonUsage, SseUsage
from gateway.upstream.scrub import query_secret
from gateway.upstream.transport import UpstreamRequest


class GroupTurns:
    """A `loop.Route` over a group's deployments. `drop_empty` and `stream_usage` are the route's (as for a plain
    group request): empty messages dropped for providers whose entry says so; stream usage asked for providers
    whose entry says so, when the client did not set `stream_options`."""

    def __init__(self, deployments: Deployments, drop_empty: bool, stream_usage: bool) -> None:
        self.deployments = deployments
        self.drop_empty = drop_empty
        # The client's own `stream_options` always win.
        self.stream_usage = stream_usage and "stream_options" not in deployments.parsed.body

    async def open(self, exchange: Exchange, body: dict[str, Any], stream: bool) -> loop.Turn:
        deployments = self.deployments
        operation = deployments.operation

        def build(member: Member) -> tuple[UpstreamRequest, bool]:
            provider = member.provider
            ask = self.stream_usage and stream and provider.stream_usage
            messages = None
            if self.drop_empty and provider.drop_empty_messages:
                messages = without_empty_messages(body["messages"])
            payload = loop.turn_payload(body, member.model, ask, messages)
            endpoint = provider.endpoints[operation]
            headers = deployments.headers(provider, identity=True)  # the loop reads each turn's answer
            return UpstreamRequest(endpoint.method, endpoint.url, headers, payload), ask

        tried = await deployments.first_answer(build)
        member, now, clock = tried.member, tried.now, deployments.clock
        whole = tried.limits.whole
        whole_end = None if whole is None else tried.started + whole
        # The turn's own figures for the deployment's measurements, read as the loop reads the turn (timed by the
        # fleet's clock, as a plain group request's are).
        scanner: SseUsage | JsonUsage
        watch: Callable[[bytes], None]
        if stream:
            scanner = streamed = SseUsage()
            streamed.clock = clock
            watch = streamed.feed
        else:
            scanner = JsonUsage()
            watch = scanner.whole

        def ended(error_type: str | None) -> None:
            measure(member, error_type, scanner, now, clock())

        secret = query_secret(member.provider)
        return loop.Turn(tried.answer, tried.limits.idle, whole_end, tried.ask, secret, watch, ended)
