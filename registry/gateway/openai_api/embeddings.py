"""``POST /v1/embeddings``: OpenAI's embeddings endpoint over the dispatcher's embed, so RAG stacks that
speak OpenAI (LangChain's ``OpenAIEmbeddings``, LlamaIndex, the ``openai`` client) get vectors from a route.

It is served like Ollama's ``/api/embed``: the name resolves to a version with the ``embedding``
capability, and the dispatcher gives the request failover, breaker feedback and a ``calls`` row.

What OpenAI's API promises and this endpoint keeps:

- Vectors have length 1, as OpenAI's do and as callers assume when they take a dot product for the
  cosine (llama.cpp's mean-pooled vectors are not normalized: we do it here, per endpoint, because
  Ollama's legacy ``/api/embeddings`` answers them raw).
- ``encoding_format`` ``base64`` is each vector's little-endian float32 bytes, which is what the
  ``openai`` client asks for by default and decodes. The vectors are rounded to float32 once, so
  ``float`` and ``base64`` answer exactly the same numbers.
- At most 2,048 inputs, none empty, as OpenAI's own bound. A text longer than one input may hold
  (llama.cpp: 512 tokens) is refused, never cut short: the provider's ``ContextOverflowError``, a 400
  that moves no breaker and writes no row.

Not supported, each a 400 that says so: token arrays as ``input`` (the providers embed text), and
``dimensions`` (no registered version is trained to be cut short, so shortening its vectors would
quietly degrade them). ``usage`` is the tokens llama.cpp read (the provider's ``Embedded.prompt_tokens``);
the call's ``calls`` row still has null token figures, as an embedding generates none.
"""

from __future__ import annotations

import base64
from typing import Any, Literal, cast

import anyio
import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from registry.errors import UserError
from registry.gateway.http import arrived, gateway_of, parse_body
from registry.gateway.limits import require_capability
from registry.gateway.responses import answer_headers, observe_served

router = APIRouter()
API = "openai"
MAX_INPUTS = 2048  # OpenAI's bound on one request's list


class EmbeddingsBody(BaseModel):
    model_config = ConfigDict(extra="allow")  # fields OpenAI may add: accepted, not applied

    model: str = Field(min_length=1, max_length=200)
    input: str | list[str | int | list[int]]  # token arrays parse, to be refused by name
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: str | None = None  # OpenAI's end-user id: accepted, nothing to do with it here

    @model_validator(mode="after")
    def _texts(self) -> EmbeddingsBody:
        """Every refusal that needs no model, before any model runs."""
        texts = [self.input] if isinstance(self.input, str) else self.input
        if not texts:
            raise ValueError("'input' is an empty list; send a string or a list of 1 to 2048 strings")
        if not all(isinstance(text, str) for text in texts):
            raise ValueError("'input' as token arrays is not supported: send the text as a string or a list of strings")
        if len(texts) > MAX_INPUTS:
            raise ValueError(f"'input' holds {len(texts)} strings; at most {MAX_INPUTS} per request: split it")
        if any(not text for text in texts):
            raise ValueError("'input' holds an empty string; every input must have some text")
        return self

    @property
    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else cast(list[str], self.input)


@router.post("/v1/embeddings")
async def embeddings(request: Request) -> JSONResponse:
    body = await parse_body(request, EmbeddingsBody)
    gateway = gateway_of(request)
    resolution = gateway.router.resolve(body.model)
    require_capability(resolution.record, "embedding", body.model)
    if body.dimensions is not None:
        raise UserError(f"'dimensions' is not supported by {body.model} ({resolution.record.ref}): its vectors keep "
                        "the model's own size; leave 'dimensions' out")
    texts = body.texts
    embedding = await anyio.to_thread.run_sync(
        lambda: gateway.dispatcher.embed(resolution, texts, api=API, arrived=arrived(request)))
    observe_served(request, gateway, embedding.outcome)
    vectors = unit_float32(embedding.vectors)
    return JSONResponse({
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": _encoded(vector, body.encoding_format)}
                 for i, vector in enumerate(vectors)],
        "model": body.model,
        "usage": {"prompt_tokens": embedding.prompt_tokens, "total_tokens": embedding.prompt_tokens},
    }, headers=answer_headers(embedding.outcome))


def unit_float32(vectors: list[list[float]]) -> np.ndarray:
    """Each vector scaled to length 1 (a zero vector stays zero), as float32: OpenAI's precision."""
    matrix = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return (matrix / np.where(norms == 0, 1, norms)).astype("<f4")


def _encoded(vector: np.ndarray, encoding_format: str) -> Any:
    if encoding_format == "base64":
        return base64.b64encode(vector.tobytes()).decode("ascii")
    return vector.tolist()
