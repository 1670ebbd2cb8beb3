"""`nmt score`: the model's score of given translations (`nmt.translate.forced`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from nmt.cli.app import (
    AlphaOpt,
    DeviceOpt,
    ErrorsOpt,
    PenaltyOpt,
    PrecisionOpt,
    app,
    command,
)
from nmt.translate.options import check_score_files


@command(app)
def score(
    checkpoints: Annotated[
        list[Path], typer.Argument(help="Checkpoint(s); several score as an ensemble.")
    ],
    source: Annotated[
        str,
        typer.Option("--source", "-s", help="Source sentences, one per line; - is stdin."),
    ],
    target: Annotated[
        str,
        typer.Option(
            "--target", "-t", help="Their translations, one per line, line for line; - is stdin."
        ),
    ],
    output: Annotated[
        str, typer.Option("--output", "-o", help="Where to write; - is stdout.")
    ] = "-",
    format: Annotated[
        str,
        typer.Option(
            help="text: the score alone; tsv: source<TAB>target<TAB>score; jsonl: a JSON object "
            "per pair with the score, the target's subwords and each one's log-probability."
        ),
    ] = "text",
    alpha: AlphaOpt = None,
    penalty: PenaltyOpt = None,
    batch_tokens: Annotated[
        int | None,
        typer.Option(
            min=1, help="Batch size in target subwords (default: decode.batch_tokens / beam)."
        ),
    ] = None,
    pieces: Annotated[
        bool,
        typer.Option(
            "--pieces",
            help="The targets are subword pieces separated by spaces (a hypothesis's `pieces` "
            "from `nmt translate --format jsonl`), scored as given: exactly what the search "
            "produced.",
        ),
    ] = False,
    errors: ErrorsOpt = "strict",
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
) -> None:
    """The model's score of given translations (forced decoding): one line per pair.

    A score is the sum of the log-probabilities of the target's subwords and eos, divided by
    the length penalty as the search does (same --penalty and --alpha). A text is split into
    subwords anew, the one way SentencePiece splits it; a search may have spelled the same text
    in other subwords, so a hypothesis of `nmt translate` gets its search score when its
    subwords are that split, in the same precision (fp32 to compare exactly; bf16 differs in
    the last digits) and searched without a shortlist (`translate --no-shortlist`: with one,
    the search normalises over each line's list, this command over the whole vocabulary). To
    score exactly what the search produced, give its pieces with
    --pieces. Use it to filter a noisy corpus (drop the lowest) or to rerank n-best lists.
    Writing to a file shows a progress bar, and the file appears only when complete.
    """
    from nmt.translate import Translator
    from nmt.translate import forced as api

    check_score_files(checkpoints, source, target, output, format, errors)
    translator = Translator.from_checkpoint(checkpoints, device, precision)
    translator.warn = lambda message: typer.echo(message, err=True)
    api.run_files(
        translator,
        source,
        target,
        output,
        fmt=format,
        errors=errors,
        penalty=penalty,
        alpha=alpha,
        batch_tokens=batch_tokens,
        pieces=pieces,
    )
