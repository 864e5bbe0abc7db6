"""The Responses API's answer (``POST /v1/responses``): the ``Response`` object whole, or the typed
events of its stream, spelled as the ``openai`` package's ``types/responses`` models read them.

A stream is server-sent events, each ``event: <type>`` and ``data: {"type": <type>, …,
"sequence_number": n}``. Its output is known piece by piece: text arrives in fragments, but a tool
call only when the generation ends (a provider never streams a call as text). So the message item
opens at the first fragment, and the ``function_call`` items follow at the end, each with its own
added / arguments / done events, as OpenAI sends them; the last event carries the whole
``Response`` (``response.completed``, or ``response.incomplete`` when ``max_output_tokens`` cut
it), which the client's stream helper and the Agents SDK take as the answer.

Nothing is stored (``store`` is always answered ``false``): a later request carries the whole
conversation in ``input``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from registry.providers import Generation
from registry.serving.dispatcher import Answer

API = "openai"  # the ``calls`` row's ``api``: the Responses API is OpenAI's too


@dataclass
class ResponsesWire:
    """One ``/v1/responses`` answer, whole or streamed (a ``responses.Wire``); one per request, as a
    stream counts its events and remembers whether its message item is open."""

    call_id: str  # the answer's ``calls`` row; the response ``id`` is ``resp_`` + call_id
    created_at: int
    model: str  # as the client asked for it
    echo: dict[str, Any]  # what the Response repeats of its request: instructions, tools, tool_choice…
    api: str = API
    stream_media_type: str = "text/event-stream"
    _sequence: int = field(default=0, init=False)  # each event's sequence_number
    _streamed: list[str] | None = field(default=None, init=False)  # None until the message item opened

    @property
    def response_id(self) -> str:
        return "resp_" + self.call_id

    @property
    def _message_id(self) -> str:
        return "msg_" + self.call_id

    def whole(self, answer: Answer) -> bytes:
        return json.dumps(self._response(answer.generation), separators=(",", ":")).encode()

    def opening(self) -> list[bytes]:
        shell = self._shell("in_progress")
        return [self._event("response.created", response=shell), self._event("response.in_progress", response=shell)]

    def fragment(self, text: str) -> bytes:
        opened = b"" if self._streamed is not None else self._open_message()
        assert self._streamed is not None
        self._streamed.append(text)
        return opened + self._event("response.output_text.delta", item_id=self._message_id, output_index=0,
                                    content_index=0, delta=text, logprobs=[])

    def closing(self, answer: Answer) -> list[bytes]:
        response = self._response(answer.generation, streamed="".join(self._streamed or []))
        events: list[bytes] = []
        for index, item in enumerate(response["output"]):
            if item["type"] == "message":
                events.extend(self._close_message(item))
            else:
                events.extend(self._function_call_events(index, item))
        done = "response.incomplete" if response["status"] == "incomplete" else "response.completed"
        return [*events, self._event(done, response=response)]

    def error(self, message: str) -> bytes:
        failed = {**self._shell("failed"), "error": {"code": "server_error", "message": message}}
        return self._event("response.failed", response=failed)

    def _open_message(self) -> bytes:
        self._streamed = []
        item = _message(self._message_id, "", "in_progress")
        item["content"] = []
        return (self._event("response.output_item.added", output_index=0, item=item)
                + self._event("response.content_part.added", item_id=self._message_id, output_index=0,
                              content_index=0, part=_text_part("")))

    def _close_message(self, item: dict[str, Any]) -> list[bytes]:
        opened = [] if self._streamed is not None else [self._open_message()]
        part = item["content"][0]
        return [*opened,
                self._event("response.output_text.done", item_id=item["id"], output_index=0, content_index=0,
                            text=part["text"], logprobs=[]),
                self._event("response.content_part.done", item_id=item["id"], output_index=0, content_index=0,
                            part=part),
                self._event("response.output_item.done", output_index=0, item=item)]

    def _function_call_events(self, index: int, item: dict[str, Any]) -> list[bytes]:
        added = {**item, "arguments": "", "status": "in_progress"}
        return [self._event("response.output_item.added", output_index=index, item=added),
                self._event("response.function_call_arguments.delta", item_id=item["id"], output_index=index,
                            delta=item["arguments"]),
                self._event("response.function_call_arguments.done", item_id=item["id"], output_index=index,
                            arguments=item["arguments"]),
                self._event("response.output_item.done", output_index=index, item=item)]

    def _response(self, generation: Generation, streamed: str = "") -> dict[str, Any]:
        incomplete = generation.finish_reason == "length"
        status = "incomplete" if incomplete else "completed"
        output: list[dict[str, Any]] = []
        text = generation.text or streamed
        if text or not generation.tool_calls:
            output.append(_message(self._message_id, text, status))
        output.extend({"type": "function_call", "id": f"fc_{self.call_id}_{n}", "call_id": call.id, "name": call.name,
                       "arguments": call.arguments, "status": "completed"}
                      for n, call in enumerate(generation.tool_calls))
        return {**self._shell(status), "output": output, "usage": _usage(generation),
                "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None}

    def _shell(self, status: str) -> dict[str, Any]:
        """The Response without its output: what ``response.created`` and ``response.failed`` carry."""
        return {"id": self.response_id, "object": "response", "created_at": self.created_at, "status": status,
                "model": self.model, "output": [], "error": None, "incomplete_details": None,
                "previous_response_id": None, "reasoning": None, "store": False, "usage": None, **self.echo}

    def _event(self, kind: str, **fields: Any) -> bytes:
        payload = {"type": kind, **fields, "sequence_number": self._sequence}
        self._sequence += 1
        return f"event: {kind}\ndata: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()


def _message(item_id: str, text: str, status: str) -> dict[str, Any]:
    return {"type": "message", "id": item_id, "role": "assistant", "status": status, "content": [_text_part(text)]}


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _usage(generation: Generation) -> dict[str, Any]:
    return {"input_tokens": generation.prompt_tokens, "output_tokens": generation.completion_tokens,
            "total_tokens": generation.prompt_tokens + generation.completion_tokens,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0}}
