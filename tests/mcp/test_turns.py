"""One model turn read in pieces: streamed events sorted into what goes on at once and what waits, whatever the
framing and however the reads cut them, and what the client gets when the turn is the last."""

from __future__ import annotations

import orjson
import pytest

from gateway.mcp.turns import DONE, StreamTurn, Usage, client_answer


def event(delta: dict, finish: str | None = None, id_: str = "c1") -> bytes:
    chunk = {"id": id_, "object": "chat.completion.chunk", "created": 1, "model": "m",
             "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}  # fmt: skip
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


TEXT = event({"content": "Hi"})
CALL_MCP = event({"tool_calls": [{"index": 0, "id": "a", "function": {"name": "files__add", "arguments": '{"a":'}}]})
CALL_MCP_REST = event({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]})
CALL_CLIENT = event({"tool_calls": [{"index": 1, "id": "b", "function": {"name": "get_weather", "arguments": "{}"}}]})
FINISH = event({}, "tool_calls")
USAGE = b'data: {"id":"c1","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}\n\n'
STREAM = TEXT + CALL_MCP + CALL_MCP_REST + CALL_CLIENT + FINISH + USAGE + DONE


@pytest.mark.parametrize("size", [1, 7, 64, len(STREAM)])
@pytest.mark.parametrize("crlf", [False, True])
def test_text_passes_at_once_and_calls_wait_whatever_the_reads(size: int, crlf: bool) -> None:
    data = STREAM.replace(b"\n", b"\r\n") if crlf else STREAM
    turn = StreamTurn()
    out = b"".join(turn.feed(data[i : i + size]) for i in range(0, len(data), size)) + turn.finish()
    assert out == TEXT
    assert [(c.id, c.name, c.arguments) for c in turn.tool_calls] == [
        ("a", "files__add", '{"a":1}'),
        ("b", "get_weather", "{}"),
    ]
    assert turn.finish_reason == "tool_calls"
    assert turn.usage == {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
    assert turn.assistant_message()["content"] == "Hi"


def test_the_client_gets_its_own_calls_renumbered_when_the_turn_was_mixed() -> None:
    turn = StreamTurn()
    turn.feed(STREAM)
    summed = Usage()
    summed.add({"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30})
    ending = turn.ending(frozenset({"files__add"}), summed, send_usage=True)
    events = [orjson.loads(e[6:]) for e in ending.split(b"\n\n") if e.startswith(b"data: {")]
    assert events[0]["choices"][0]["delta"] == {
        "tool_calls": [
            {"index": 0, "id": "b", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
        ]
    }
    assert events[1]["choices"][0]["finish_reason"] == "tool_calls"
    assert events[2]["usage"] == {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30}
    assert ending.endswith(DONE) and ending.count(b"[DONE]") == 1


def test_the_client_gets_the_held_events_untouched_when_every_call_is_its_own() -> None:
    turn = StreamTurn()
    turn.feed(TEXT + CALL_CLIENT + FINISH + DONE)
    assert turn.ending(frozenset({"files__add"}), None, send_usage=False) == CALL_CLIENT + FINISH + DONE


def test_later_turns_carry_the_first_turns_id() -> None:
    turn = StreamTurn("first")
    assert orjson.loads(turn.feed(event({"content": "x"}, id_="second"))[6:])["id"] == "first"


def test_a_whole_answer_loses_the_gateways_calls_and_sums_usage() -> None:
    def call(id_: str, name: str) -> dict:
        return {"id": id_, "type": "function", "function": {"name": name, "arguments": "{}"}}

    message = {"role": "assistant", "content": None, "tool_calls": [call("a", "files__add"), call("b", "mine")]}
    answer = {
        "id": "x",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": message}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }
    summed = Usage()
    summed.add({"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11})
    out = client_answer(answer, frozenset({"files__add"}), summed)
    assert [c["id"] for c in out["choices"][0]["message"]["tool_calls"]] == ["b"]
    assert out["usage"] == {"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11}
    assert len(answer["choices"][0]["message"]["tool_calls"]) == 2  # the provider's answer is left as it was
