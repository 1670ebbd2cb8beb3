"""`nmt translate`: translate a file or stdin, line for line (`nmt.translate`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from nmt.cli.app import (
    AlphaOpt,
    CompileOpt,
    DeviceOpt,
    ErrorsOpt,
    PenaltyOpt,
    PrecisionOpt,
    ShortlistOpt,
    app,
    command,
    shown,
)
from nmt.translate.options import (
    PLOT_LINES,
    SEED,
    TEMPERATURE,
    check_model_options,
    check_translate_files,
)


@command(app)
def translate(
    checkpoints: Annotated[
        list[Path], typer.Argument(help="Checkpoint(s); several decode as an ensemble.")
    ],
    input: Annotated[
        str,
        typer.Option("--input", "-i", help="Text to translate, one sentence per line; - is stdin."),
    ] = "-",
    output: Annotated[
        str, typer.Option("--output", "-o", help="Where to write; - is stdout.")
    ] = "-",
    beam: Annotated[
        int | None,
        typer.Option(min=1, help="Beam width (1: greedy).", show_default=shown("decode.beam_size")),
    ] = None,
    alpha: AlphaOpt = None,
    penalty: PenaltyOpt = None,
    nbest: Annotated[
        int, typer.Option(min=1, help="Hypotheses per line (≤ beam; needs --format tsv or jsonl).")
    ] = 1,
    batch_tokens: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Batch size: source subwords x beam.",
            show_default=shown("decode.batch_tokens"),
        ),
    ] = None,
    format: Annotated[
        str,
        typer.Option(
            help="text: the best translation; tsv: translation<TAB>score per hypothesis; "
            "jsonl: a JSON object per line with every hypothesis, its score and subwords."
        ),
    ] = "text",
    attention: Annotated[
        bool, typer.Option("--attention", help="Add attention weights to --format jsonl.")
    ] = False,
    plot_attention: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR", help="Write attention heatmaps (line-N.png) for the first lines."
        ),
    ] = None,
    plot_lines: Annotated[
        int, typer.Option(min=1, help="How many lines --plot-attention draws.")
    ] = PLOT_LINES,
    long_lines: Annotated[
        str | None,
        typer.Option(
            help="A line over decode.max_input_len subwords: split (translated whole, in parts "
            "joined) or truncate. The checkpoint's decode.long_lines by default.",
            show_default=shown("decode.long_lines"),
        ),
    ] = None,
    errors: ErrorsOpt = "strict",
    glossary: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            help="Terms to translate as given: a TSV file of source<TAB>target lines. A term is "
            "found as whole words, longest first, and carried like a placeholder (needs a model "
            "preprocessed with --protect); jsonl output lists the terms applied per line.",
        ),
    ] = None,
    glossary_ignore_case: Annotated[
        bool, typer.Option("--glossary-ignore-case", help="Match glossary terms in any case.")
    ] = False,
    markup: Annotated[
        str | None,
        typer.Option(
            help="xml: the input holds inline XML (e.g. help pages); its tags and entities are "
            "carried through, nested as in the input, and the rest is escaped, so the output "
            "is well-formed XML with the same tags (needs a model preprocessed with --protect)."
        ),
    ] = None,
    sampling: Annotated[
        str | None,
        typer.Option(
            metavar="full|topk:K|topp:P",
            help="Draw one translation per line from the model instead of searching: from the "
            "whole distribution, the K most probable tokens, or the smallest set holding "
            "probability P (e.g. for back-translation). A line gets the same draw for a --seed "
            "whatever its batch.",
        ),
    ] = None,
    temperature: Annotated[
        float, typer.Option(help="Divides the log-probabilities before --sampling draws.")
    ] = TEMPERATURE,
    prefix_file: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            help="Target-language text each translation must begin with, one line per input "
            "line (empty: none), as interactive translation needs: the prefix is forced, the "
            "rest searched (or sampled).",
        ),
    ] = None,
    seed: Annotated[int, typer.Option(min=0, help="The draws of --sampling.")] = SEED,
    shortlist: ShortlistOpt = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    compile: CompileOpt = False,
) -> None:
    """Translate a file or stdin with trained checkpoint(s): exactly one output line per line.

    Lines are batched by length and decoded with beam search; empty lines stay empty, overlong
    lines are translated in parts (or truncated, --long-lines truncate) with a warning. A model
    preprocessed with --protect keeps every placeholder, tag and URL of the input, exactly once
    each. Reading from a pipe, each translation is written as soon as its line has arrived.
    Writing to a file shows a progress bar, and the file appears only when complete.
    """
    from nmt.config import checked
    from nmt.data.protect import read_glossary
    from nmt.translate import Translator, files

    long_lines = long_lines and checked("decode.long_lines", long_lines, "--long-lines")
    check_translate_files(
        checkpoints, input, output, fmt=format, errors=errors, nbest=nbest, attention=attention,
        plot_attention=plot_attention, plot_lines=plot_lines, sampling=sampling,
        temperature=temperature, seed=seed, glossary=glossary,
        glossary_ignore_case=glossary_ignore_case, markup=markup, prefix_file=prefix_file,
    )  # fmt: skip
    terms = read_glossary(glossary) if glossary else None
    prefixes = files.read_prefixes(prefix_file, errors) if prefix_file else None
    translator = Translator.from_checkpoint(checkpoints, device, precision, compile)
    translator.warn = lambda message: typer.echo(message, err=True)
    translator.cfg.decode.long_lines = long_lines or translator.cfg.decode.long_lines
    if terms is not None or markup:
        translator.protect(terms, glossary_ignore_case, markup)
    decode = dict(beam=beam, nbest=nbest, alpha=alpha, penalty=penalty, batch_tokens=batch_tokens,
                  sampling=sampling, temperature=temperature, seed=seed,
                  shortlist=shortlist)  # fmt: skip
    check_model_options(translator, attention, plot_attention, **decode)
    if plot_attention:
        files.plot_directory(plot_attention)
    files.run_files(
        translator,
        input,
        output,
        fmt=format,
        errors=errors,
        attention=attention,
        plot_dir=plot_attention,
        plot_lines=plot_lines,
        prefixes=prefixes,
        **decode,
    )
