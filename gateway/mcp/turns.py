"""One model turn of the chat loop, read in OpenAI's chat shape: the tool calls it made (whole answers, and streams
event by event), which of them are the gateway's (MCP) and which the client's, and what the client is sent of it.
Pure: bytes and dicts in, bytes and dicts out.

A stream's events are sorted as they pass: text (content, role, refusal) goes on at once; tool-call deltas, the
finish chunk, usage chunks and `[DONE]` are held until the turn ends, because only then is it known whether the
turn goes to the client (an answer, or the client's own tool calls) or stays in the gateway (MCP calls).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

DONE = b"data: [DONE]\n\n"


@dataclass(slots=True)
class Call:
    """One tool call as the model made it (a stream's deltas joined)."""

    id: str = ""
    name: str = ""
    arguments: str = ""

    def message_entry(self) -> dict[str, Any]:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


@dataclass(slots=True)
class Usage:
    """Token counts summed over the turns of one request."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    seen: bool = False

    def add(self, usage: Any) -> None:
        if not isinstance(usage, dict):
            return
        for name in ("prompt_tokens", "completion_tokens", "total_tokens"):
            value = usage.get(name)
            if type(value) is int and value >= 0:
                setattr(self, name, getattr(self, name) + value)
        self.seen = True

    def into(self, usage: Any) -> dict[str, Any]:
        """The summed counts written over a provider's usage object (its other fields kept)."""
        merged = dict(usage) if isinstance(usage, dict) else {}
        merged.update(
            prompt_tokens=self.prompt_tokens, completion_tokens=self.completion_tokens, total_tokens=self.total_tokens
        )
        return merged


def split_calls(calls: list[Call], gateway: frozenset[str] | set[str]) -> tuple[list[Call], list[Call]]:
    """(the gateway's calls, the client's calls): a call is the gateway's only when its name is an MCP tool this
    request was offered; any other name, known to the client or not, goes back to the client."""
    mine = [call for call in calls if call.name in gateway]
    theirs = [call for call in calls if call.name not in gateway]
    return mine, theirs


# --- whole answers ---------------------------------------------------------------------------------------------


def answer_calls(answer: dict[str, Any]) -> list[Call]:
    """The tool calls of a whole chat answer's first choice."""
    message = _first_message(answer)
    calls = message.get("tool_calls") if message is not None else None
    if not isinstance(calls, list):
        return []
    found = []
    for entry in calls:
        function = entry.get("function") if isinstance(entry, dict) else None
        if isinstance(function, dict):
            found.append(
                Call(str(entry.get("id") or ""), str(function.get("name") or ""), str(function.get("arguments") or ""))
            )
    return found


def assistant_message(answer: dict[str, Any]) -> dict[str, Any]:
    """The turn's assistant message as the next turn's request carries it."""
    message = _first_message(answer) or {}
    kept = {"role": "assistant", "content": message.get("content")}
    if message.get("tool_calls"):
        kept["tool_calls"] = message["tool_calls"]
    return kept


def client_answer(answer: dict[str, Any], gateway: frozenset[str] | set[str], usage: Usage | None) -> dict[str, Any]:
    """The answer the client receives: without the gateway's calls when the model also called the client's tools
    (the model may call them again on the client's next turn), with the usage of every turn summed."""
    answer = dict(answer)
    message = _first_message(answer)
    if message is not None and isinstance(message.get("tool_calls"), list):
        kept = [
            entry
            for entry in message["tool_calls"]
            if not (isinstance(entry, dict) and (entry.get("function") or {}).get("name") in gateway)
        ]
        if len(kept) != len(message["tool_calls"]):
            choice = dict(answer["choices"][0])
            choice["message"] = {**message, "tool_calls": kept}
            answer["choices"] = [choice, *answer["choices"][1:]]
    if usage is not None and usage.seen:
        answer["usage"] = usage.into(answer.get("usage"))
    return answer


def _first_message(answer: dict[str, Any]) -> dict[str, Any] | None:
    choices = answer.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return None
    message = choices[0].get("message")
    return message if isinstance(message, dict) else None


# --- streams ---------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class StreamTurn:
    """One streamed turn, fed the provider's bytes. `feed` returns what may go to the client at once (text);
    everything else waits for `ending` once the turn is over. `stream_id`, when set, replaces each forwarded
    chunk's `id`, so every turn after the first reads as one stream with the first turn's id."""

    stream_id: str | None = None
    text: list[str] = field(default_factory=list)
    calls: dict[int, Call] = field(default_factory=dict)
    finish_reason: str | None = None
    usage: Any = None  # the provider's usage object, when it sent one
    first_id: str | None = None
    _pending: bytes = b""
    _held: list[tuple[bytes, dict[str, Any] | None]] = field(default_factory=list)
    _template: dict[str, Any] | None = None

    def feed(self, chunk: bytes) -> bytes:
        data = (self._pending + chunk).replace(b"\r\n", b"\n") if self._pending or b"\r" in chunk else chunk
        cut = data.rfind(b"\n\n")
        if cut < 0:
            self._pending = data
            return b""
        self._pending = data[cut + 2 :]
        out = []
        for event in data[: cut + 2].split(b"\n\n"):
            if event:
                out.append(self._event(event + b"\n\n"))
        return b"".join(out)

    def _event(self, event: bytes) -> bytes:
        payload = _data(event)
        if payload is None:
            return event  # comments and the like pass
        if payload == b"[DONE]":
            return b""
        try:
            parsed = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return event
        if not isinstance(parsed, dict):
            return event
        if self.first_id is None and isinstance(parsed.get("id"), str):
            self.first_id = parsed["id"]
        if self._template is None:
            self._template = {k: v for k, v in parsed.items() if k in ("id", "object", "created", "model")}
        choices = parsed.get("choices")
        if parsed.get("usage") is not None:
            self.usage = parsed["usage"]
        if not isinstance(choices, list) or not choices:
            self._held.append((event, parsed))  # a usage chunk
            return b""
        choice = choices[0] if isinstance(choices[0], dict) else {}
        found = choice.get("delta")
        delta: dict[str, Any] = found if isinstance(found, dict) else {}
        if isinstance(delta.get("content"), str):
            self.text.append(delta["content"])
        held = False
        if isinstance(delta.get("tool_calls"), list):
            self._add_calls(delta["tool_calls"])
            held = True
        if choice.get("finish_reason") is not None:
            self.finish_reason = str(choice["finish_reason"])
            held = True
        if held:
            self._held.append((event, parsed))
            return b""
        return self._forwarded(event, parsed)

    def _add_calls(self, deltas: list[Any]) -> None:
        for delta in deltas:
            if not isinstance(delta, dict):
                continue
            index = delta.get("index", 0)
            call = self.calls.setdefault(index if type(index) is int else 0, Call())
            if isinstance(delta.get("id"), str):
                call.id += delta["id"]
            function = delta.get("function")
            if isinstance(function, dict):
                if isinstance(function.get("name"), str):
                    call.name += function["name"]
                if isinstance(function.get("arguments"), str):
                    call.arguments += function["arguments"]

    def _forwarded(self, event: bytes, parsed: dict[str, Any]) -> bytes:
        if self.stream_id is None or parsed.get("id") == self.stream_id:
            return event
        return b"data: " + orjson.dumps({**parsed, "id": self.stream_id}) + b"\n\n"

    def finish(self) -> bytes:
        """The unfinished tail when the provider's stream ended (an event without its blank line): handled as if
        it had one."""
        tail, self._pending = self._pending, b""
        return self._event(tail.rstrip(b"\n") + b"\n\n") if tail.strip() else b""

    @property
    def tool_calls(self) -> list[Call]:
        return [self.calls[index] for index in sorted(self.calls)]

    def assistant_message(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": "".join(self.text) or None}
        if self.calls:
            message["tool_calls"] = [call.message_entry() for call in self.tool_calls]
        return message

    def ending(self, gateway: frozenset[str] | set[str], usage: Usage | None, send_usage: bool) -> bytes:
        """What the client is sent when this turn is the last: the held events as they came when every call is
        the client's; the client's calls alone, re-numbered from 0, when the model also called the gateway's
        tools; the usage chunk (with every turn's usage summed) only when the client asked for usage; `[DONE]`."""
        mixed = any(call.name in gateway for call in self.calls.values())
        out = []
        if mixed:
            template = self._template or {}
            index = 0
            for call in self.tool_calls:
                if call.name in gateway:
                    continue
                delta = {"index": index, **call.message_entry()}
                out.append(self._chunk(template, {"tool_calls": [delta]}, None))
                index += 1
        for event, parsed in self._held:
            if parsed is None:
                continue
            choices = parsed.get("choices")
            if not isinstance(choices, list) or not choices:
                if send_usage:
                    out.append(self._usage_event(parsed, usage))
                continue
            if mixed:
                choice = choices[0] if isinstance(choices[0], dict) else {}
                if choice.get("finish_reason") is not None:
                    out.append(self._chunk(parsed, {}, choice["finish_reason"], parsed.get("usage")))
                continue
            out.append(self._forwarded(event, parsed))
        out.append(DONE)
        return b"".join(out)

    def _usage_event(self, parsed: dict[str, Any], usage: Usage | None) -> bytes:
        if usage is not None and usage.seen:
            parsed = {**parsed, "usage": usage.into(parsed.get("usage"))}
        if self.stream_id is not None:
            parsed = {**parsed, "id": self.stream_id}
        return b"data: " + orjson.dumps(parsed) + b"\n\n"

    def _chunk(self, template: dict[str, Any], delta: dict[str, Any], finish: Any, usage: Any = None) -> bytes:
        chunk = {k: v for k, v in template.items() if k in ("id", "object", "created", "model")}
        if self.stream_id is not None:
            chunk["id"] = self.stream_id
        chunk["choices"] = [{"index": 0, "delta": delta, "finish_reason": finish}]
        if usage is not None:
            chunk["usage"] = usage
        return b"data: " + orjson.dumps(chunk) + b"\n\n"


def _data(event: bytes) -> bytes | None:
    """The `data:` payload of one event (its lines joined), None when it has none."""
    lines = [line[5:].lstrip(b" ") for line in event.split(b"\n") if line.startswith(b"data:")]
    return b"\n".join(lines) if lines else None


def usage_event(usage: Usage) -> bytes:
    """A usage chunk of the summed counts, for the gateway's own record (never sent when the client did not ask)."""
    return b"data: " + orjson.dumps({"choices": [], "usage": usage.into(None)}) + b"\n\n"
