"""The HTTP API's request and response bodies (pydantic): validation and the OpenAPI schema."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator


class TranslateRequest(BaseModel):
    """One text or a list of texts, and optional search settings for this request."""

    model_config = ConfigDict(extra="forbid", strict=True)

    text: str | None = Field(None, description="One sentence to translate (or use `texts`).")
    texts: list[str] | None = Field(
        None,
        description="Several sentences, translated together and answered in order (at most "
        "`serve.max_sentences`).",
    )
    beam: int | None = Field(
        None,
        ge=1,
        description="Beam width (1: greedy); default: the checkpoint's decode.beam_size.",
    )
    nbest: int = Field(
        1, ge=1, description="Hypotheses per sentence (at most the beam), best first, in `nbest`."
    )
    alpha: float | None = Field(
        None,
        ge=0,
        allow_inf_nan=False,
        description="Length penalty exponent (Wu et al. 2016); default: decode.alpha.",
    )
    attention: bool = Field(
        False,
        description="Add the attention weights of the best hypothesis ([target subwords + eos]"
        " x [source subwords + eos]) and both sides' subwords.",
    )

    @model_validator(mode="after")
    def one_input(self) -> TranslateRequest:
        if (self.text is None) == (self.texts is None):
            raise ValueError("give exactly one of `text` (a string) and `texts` (a list)")
        return self


class Hypothesis(BaseModel):
    translation: str = Field(description="The translation, detokenised.")
    score: float = Field(description="Log-probability divided by the length penalty.")


class Translated(BaseModel):
    """One sentence's answer."""

    translation: str = Field(description="The best translation.")
    score: float = Field(description="Its log-probability divided by the length penalty.")
    nbest: list[Hypothesis] | None = Field(
        None, description="With `nbest` > 1: the n best hypotheses, best first."
    )
    source_pieces: list[str] | None = Field(None, description="With `attention`: source subwords.")
    target_pieces: list[str] | None = Field(None, description="With `attention`: output subwords.")
    attention: list[list[float]] | None = Field(
        None, description="With `attention`: weights, one row per target subword (and eos)."
    )
    warnings: list[str] | None = Field(
        None, description="What was done to this sentence: truncated, or spans left unprotected."
    )


class TextResponse(Translated):
    """The answer to `{"text": ...}`."""

    time_ms: float = Field(description="Time spent in the server, queueing included.")


class TextsResponse(BaseModel):
    """The answer to `{"texts": [...]}`: one entry per input, in order."""

    translations: list[Translated]
    time_ms: float = Field(description="Time spent in the server, queueing included.")


class ModelInfo(BaseModel):
    source_language: str
    target_language: str
    arch: str = Field(description="rnnenc, rnnsearch or luong.")
    parameters: int = Field(description="Weights of the first model.")
    vocabulary: dict[str, int] = Field(description="Subword vocabulary size per language.")
    checkpoints: list[dict[str, str]] = Field(description="Path and content sha256 of each model.")
    protected_spans: str | None = Field(description="Span kinds the model carries, if any.")
    device: str
    precision: str
    config: dict[str, Any] = Field(description="The first checkpoint's configuration.")


class ErrorBody(BaseModel):
    error: str = Field(description="What was wrong, and what to do.")
    detail: list[dict[str, Any]] | None = Field(None, description="Each invalid field.")
