"""The MCP chat loop's turns for a model group: each turn is routed as the group routes any request (a deployment
by the strategy, the next one when it fails before its first byte, breakers told), so a client gets the MCP tools
whether its model is one provider's or a group's. Each turn is a new choice: a loop's turns may be served by
different deployments, and each sees the conversation so far.
"""

from __future__ import annotations

from typing import Any

from gateway.api.groups import Deployments
from gateway.dialects.openai import without_empty_messages
from gateway.exchange import Exchange
from gateway.mcp import loop
from gateway.routing.deployments import Member
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
        member = tried.member
        whole = tried.limits.whole
        whole_end = None if whole is None else tried.started + whole

        def ended(error_type: str | None, usage: Any) -> None:
            """The turn's end into its deployment's breaker and output average (its latency is not measured: the
            loop reads a turn's words as they come and does not time them)."""
            live, now = member.live, deployments.clock()
            if error_type in ("truncated", "timeout"):
                live.breaker.failure(now, f"the answer was cut short ({error_type})")
                return
            output = usage.get("completion_tokens") if isinstance(usage, dict) else None
            if type(output) is int:
                live.measure.observe(now, None, None, output)

        return loop.Turn(tried.answer, tried.limits.idle, whole_end, tried.ask, query_secret(member.provider), ended)
