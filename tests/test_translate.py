"""nmt translate and the Translator API: line alignment, formats, streaming, plots, errors."""

import json
import re
import select
import signal
import struct
import subprocess
import sys
import time

import pytest
import torch
from typer.testing import CliRunner

from nmt.cli import app
from nmt.config import Config, apply_overrides
from nmt.data.protect import Protector, spans_of
from nmt.errors import NmtError
from nmt.model.checkpoint import load_checkpoint, save_checkpoint
from nmt.preprocess import preprocess
from nmt.train import train
from nmt.translate import Translator
from nmt.translate.files import format_result
from nmt.translate.plot import figure_size
from tests.conftest import SAMPLE, data_config, with_spans, write_tsv

runner = CliRunner()
TINY = [
    "train.precision=fp32",
    "model.emb_size=16",
    "model.hidden_size=16",
    "train.batch_tokens=500",
    "train.max_steps=2",
    "train.valid_every=1000",
    "decode.max_len_a=0.5",
    "decode.max_len_b=3",
    "decode.max_input_len=12",
]


@pytest.fixture(scope="module")
def checkpoint(sample_dir, tmp_path_factory):
    """A barely trained model: its translations are poor, but every code path runs."""
    run = tmp_path_factory.mktemp("translate") / "run"
    train(apply_overrides(Config(), TINY), sample_dir, run, progress_bar=False, log=lambda _: None)
    return run / "last.pt"


def _translate(checkpoint, tmp_path, data: bytes, *options):
    src = tmp_path / "in.txt"
    src.write_bytes(data)
    out = tmp_path / "out.txt"
    result = runner.invoke(
        app, ["translate", str(checkpoint), "-i", str(src), "-o", str(out), *options]
    )
    return result, out


def test_one_output_line_per_input_line(checkpoint, tmp_path):
    """Empty lines stay empty, CRLF and a BOM are accepted, a long line is translated in parts
    with a warning naming it; the output has exactly as many lines as the input, in order."""
    long_line = " ".join(["palabra"] * 40)
    data = "\ufeffEn el principio\r\n\r\nDios\r\n" + long_line + "\n\nY dijo Dios"
    result, out = _translate(checkpoint, tmp_path, data.encode("utf-8"))
    assert result.exit_code == 0, result.output
    lines = out.read_text(encoding="utf-8").split("\n")
    assert lines[-1] == "" and len(lines) - 1 == 6
    assert lines[1] == "" and lines[4] == ""
    assert all(lines[i] for i in (0, 2, 3, 5))
    assert "line 4" in result.output and "translated in 4 parts" in result.output
    alone = Translator.from_checkpoint(checkpoint).translate(["En el principio", "Y dijo Dios"])
    assert [lines[0], lines[5]] == alone  # the BOM and CRLF did not reach the model


@pytest.mark.parametrize("data, expected", [(b"", 0), (b"\n\n\n", 3), (b"\r\n", 1)])
def test_empty_files_and_files_of_empty_lines(checkpoint, tmp_path, data, expected):
    result, out = _translate(checkpoint, tmp_path, data)
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == b"\n" * expected


def test_invalid_utf8_is_reported_with_its_line_or_replaced(checkpoint, tmp_path):
    data = b"Dios\nDi\xe9s\nluz\n"
    result, out = _translate(checkpoint, tmp_path, data)
    assert result.exit_code == 2
    assert "in.txt:2" in result.output and "--errors replace" in result.output
    assert not out.exists()  # nothing half-written
    result, out = _translate(checkpoint, tmp_path, data, "--errors", "replace")
    assert result.exit_code == 0
    assert len(out.read_text(encoding="utf-8").splitlines()) == 3


def test_nbest_jsonl_and_tsv(checkpoint, tmp_path):
    data = b"Dios\n\nY dijo Dios: Sea la luz\n"
    result, out = _translate(
        checkpoint, tmp_path, data, "--format", "jsonl", "--nbest", "3", "--attention"
    )
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["line"] for r in records] == [1, 2, 3]
    assert records[1]["hypotheses"] == [{"text": "", "score": 0.0, "pieces": []}] * 3
    for r in (records[0], records[2]):
        hyps = r["hypotheses"]
        assert len(hyps) == 3 and len({tuple(h["pieces"]) for h in hyps}) == 3
        assert [h["score"] for h in hyps] == sorted((h["score"] for h in hyps), reverse=True)
        weights = hyps[0]["attention"]
        assert len(weights) == len(hyps[0]["pieces"]) + 1
        assert all(len(row) == len(r["source_pieces"]) for row in weights)
    result, tsv = _translate(checkpoint, tmp_path, data, "--format", "tsv", "--nbest", "2")
    rows = tsv.read_text(encoding="utf-8").split("\n")[:-1]
    assert len(rows) == 3 and [len(row.split("\t")) for row in rows] == [4, 4, 4]
    text = [h["text"] for h in records[0]["hypotheses"][:2]]
    assert rows[0].split("\t")[::2] == text


def test_nmt_translate_in_int8(checkpoint, tmp_path):
    """One line out per line in (an empty one stays empty), as in fp32."""
    data = b"Dios\n\nY dijo Dios: Sea la luz.\n"
    result, out = _translate(checkpoint, tmp_path, data, "--precision", "int8")
    assert result.exit_code == 0, result.output
    lines = out.read_text(encoding="utf-8").split("\n")
    assert len(lines) == 4 and lines[1] == "" and lines[3] == ""
    (tmp_path / "fp32").mkdir()
    fp32, out32 = _translate(checkpoint, tmp_path / "fp32", data, "--precision", "fp32")
    assert fp32.exit_code == 0 and len(out32.read_text(encoding="utf-8").split("\n")) == 4


def test_option_errors(checkpoint, tmp_path):
    result, _ = _translate(checkpoint, tmp_path, b"Dios\n", "--nbest", "3")
    assert result.exit_code == 2 and "--format tsv" in result.output
    result, _ = _translate(checkpoint, tmp_path, b"Dios\n", "--nbest", "6", "--format", "tsv")
    assert result.exit_code == 2 and "beam" in result.output
    result, _ = _translate(checkpoint, tmp_path, b"Dios\n", "--penalty", "short")
    assert result.exit_code == 2 and "length_penalty` must be one of wu" in result.output
    result, _ = _translate(checkpoint, tmp_path, b"Dios\n", "--precision", "int4")
    assert result.exit_code == 2 and "unknown precision" in result.output
    result = runner.invoke(app, ["translate", str(tmp_path / "none.pt")])
    assert result.exit_code == 2 and "checkpoint not found" in result.output


def test_output_errors_come_before_decoding(checkpoint, tmp_path):
    (tmp_path / "plots").mkdir()
    result, _ = _translate(checkpoint, tmp_path, b"Dios\n", "-o", str(tmp_path / "plots"))
    assert result.exit_code == 2 and "is a directory" in result.output
    nested = tmp_path / "new" / "dir" / "out.txt"
    result, _ = _translate(checkpoint, tmp_path, b"Dios\n\n", "-o", str(nested))
    assert result.exit_code == 0 and nested.read_text().count("\n") == 2


def test_sigterm_leaves_no_partial_output(checkpoint, tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("Y dijo Dios: Sea la luz\n" * 20000)
    proc = subprocess.Popen(
        [sys.executable, "-m", "nmt", "translate", str(checkpoint), "-i", str(src), "-o", "out"],
        cwd=tmp_path,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".out.tmp-*")):  # decoding has begun
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt"]


def test_attention_plot_is_a_png_of_the_right_size(checkpoint, tmp_path):
    plots = tmp_path / "plots"
    data = b"Y dijo Dios\n\nSea la luz\n"
    result, out = _translate(checkpoint, tmp_path, data, "--plot-attention", str(plots))
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in plots.iterdir()) == ["line-1.png", "line-3.png"]
    [first] = Translator.from_checkpoint(checkpoint).translate_nbest(["Y dijo Dios"])
    png = (plots / "line-1.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
    width, height = struct.unpack(">II", png[16:24])
    n_out = len(first.hypotheses[0].pieces) + 1
    assert (width, height) == figure_size(len(first.source_pieces), n_out)


def test_stdin_pipe_gets_each_translation_before_eof(checkpoint):
    proc = subprocess.Popen(
        [sys.executable, "-m", "nmt", "translate", str(checkpoint)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        proc.stdin.write(b"Y dijo Dios\n")
        proc.stdin.flush()
        ready, _, _ = select.select([proc.stdout], [], [], 30)  # stdin is still open
        assert ready, "no translation before the end of the input"
        first = proc.stdout.readline()
        assert first.endswith(b"\n") and first.strip()
        proc.stdin.write(b"\n")
        proc.stdin.close()
        assert proc.stdout.read() == b"\n"
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()


def test_a_model_with_non_finite_scores_still_gives_one_line_per_line(checkpoint):
    translator = Translator.from_checkpoint(checkpoint)
    with torch.no_grad():
        translator.models[0].output.bias.fill_(float("nan"))
    warnings = []
    translator.warn = warnings.append
    assert translator.translate(["Y dijo Dios", "", "Sea la luz"]) == ["", "", ""]
    assert [w.split(":")[1] for w in warnings] == [" line 1", " line 3"]
    result = translator.translate_nbest(["Sea la luz"])[0]
    assert format_result(result, "text", 1, "Sea la luz") == ""


def test_python_api_and_self_ensemble(checkpoint):
    texts = ["En el principio creó Dios los cielos y la tierra.", "", "Sea la luz"]
    alone = Translator.from_checkpoint(checkpoint)
    pair = Translator.from_checkpoint([checkpoint, checkpoint])
    assert len(alone.translate(texts, beam=5)) == 3
    for a, b in zip(alone.translate_nbest(texts, nbest=3), pair.translate_nbest(texts, nbest=3)):
        assert [h.text for h in a.hypotheses] == [h.text for h in b.hypotheses]
        assert [h.score for h in a.hypotheses] == pytest.approx([h.score for h in b.hypotheses])


def test_an_ensemble_needs_one_vocabulary(checkpoint, toy_dir, tmp_path):
    other = load_checkpoint(checkpoint)
    for entry in other["vocab"]["tokenizers"].values():
        entry["proto"] = (toy_dir / "spm.model").read_bytes()  # as if trained on other data
    save_checkpoint(tmp_path / "other.pt", other)
    with pytest.raises(NmtError, match="one vocabulary"):
        Translator.from_checkpoint([checkpoint, tmp_path / "other.pt"])


def test_a_prefix_file_begins_each_translation_with_its_line(checkpoint, tmp_path):
    """--prefix-file: each translation (searched or sampled) begins with its line's prefix,
    in subwords; an empty prefix leaves the line free, an empty line stays empty; a prefix
    file that does not line up with the input is an error, and no output is written."""
    src, prefixes = tmp_path / "in.es", tmp_path / "prefix.en"
    src.write_text("hola mundo\nadiós\n\nla tierra y el cielo\n", encoding="utf-8")
    lines = ["In the", "", "Hello", "the earth"]
    prefixes.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tok = Translator.from_checkpoint(checkpoint, "cpu", "fp32").tgt_tokenizer
    for options in (["--beam", "3"], ["--sampling", "topk:5"]):
        result = runner.invoke(
            app, ["translate", str(checkpoint), "-i", str(src), "--prefix-file", str(prefixes),
                  "--format", "jsonl", *options],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        records = [json.loads(line) for line in result.stdout.splitlines()]
        assert len(records) == 4 and records[2]["hypotheses"][0]["text"] == ""
        for i in (0, 3):
            forced = tok.pieces(tok.encode([lines[i]])[0])
            assert records[i]["hypotheses"][0]["pieces"][: len(forced)] == forced
    translator = Translator.from_checkpoint(checkpoint, "cpu", "fp32")
    given = ["Costs 5€ — 漢字 ok", "Two  spaces and\ttab ", "In the"]
    results = translator.translate_nbest(["hola"] * 3, beam=2, prefixes=given)
    for prefix, result in zip(given, results):  # as given, not as the subwords spell it
        assert result.hypotheses[0].text.startswith(prefix), result.hypotheses[0].text
    assert format_result(results[1], "tsv", 2, "hola").count("\t") == 1  # its tab a space
    short = tmp_path / "short.en"
    short.write_text("In the\n", encoding="utf-8")
    out = tmp_path / "out.en"
    result = runner.invoke(
        app, ["translate", str(checkpoint), "-i", str(src), "--prefix-file", str(short),
              "-o", str(out)],
    )  # fmt: skip
    assert result.exit_code == 2 and str(short) in result.stderr and not out.exists()
    result = runner.invoke(  # to stdout: refused before the first line is written
        app, ["translate", str(checkpoint), "-i", str(src), "--prefix-file", str(short)]
    )
    assert result.exit_code == 2 and result.stdout == "", result.output
    assert "the prefix file has 1 lines, the input 4" in result.stderr
    result = runner.invoke(
        app, ["translate", str(checkpoint), "-i", "-", "--prefix-file", "-"], input="hola\n"
    )
    assert result.exit_code == 2 and "cannot both be stdin" in result.stderr
    latin = tmp_path / "latin.en"
    latin.write_bytes(b"caf\xe9\n\n\n\n")
    args = ["translate", str(checkpoint), "-i", str(src), "--prefix-file", str(latin)]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "--errors replace" in result.stderr
    assert runner.invoke(app, [*args, "--errors", "replace"]).exit_code == 0


def test_attention_options_are_checked_before_any_line(checkpoint, sample_dir, tmp_path):
    """A --plot-attention path that cannot be a directory, and attention asked of a model
    without it (rnnenc), are errors before decoding: no output file, nothing on stdout."""
    (tmp_path / "a-file").write_text("mine", encoding="utf-8")
    result, out = _translate(checkpoint, tmp_path, b"Dios\n", "--plot-attention",
                             str(tmp_path / "a-file"))  # fmt: skip
    assert result.exit_code == 2 and "the heatmaps need a directory" in result.stderr
    assert not out.exists() and (tmp_path / "a-file").read_text(encoding="utf-8") == "mine"
    run = tmp_path / "rnnenc"
    cfg = apply_overrides(Config(), [*TINY, "model.arch=rnnenc", "train.max_steps=1"])
    train(cfg, sample_dir, run, progress_bar=False, log=lambda _: None)
    for options in (["--plot-attention", str(tmp_path / "plots")], ["--attention", "--format",
                                                                      "jsonl"]):  # fmt: skip
        result = runner.invoke(app, ["translate", str(run / "last.pt"), "-i", "-", *options],
                               input="Dios\n")  # fmt: skip
        assert result.exit_code == 2 and result.stdout == "", result.output
        assert "no attention weights to show" in result.stderr
    assert not (tmp_path / "plots").exists()


def test_the_python_api_refuses_misuse_and_takes_any_iterable(checkpoint):
    """A lone string would be translated character by character, None or bytes would end in a
    bare TypeError inside SentencePiece, a lone surrogate too; pairs that do not line up would
    lose the extra sources. Each is an NmtError naming what was expected."""
    from nmt.translate import score_pairs

    tr = Translator.from_checkpoint(checkpoint, "cpu", "fp32")
    texts = ["la luz", "el agua"]
    assert tr.translate(iter(texts)) == tr.translate(texts)  # a generator is a list of texts
    cases = [
        ("la luz", "texts is one str, not a list of texts"),
        (b"la luz", "texts is one bytes"),
        ([None], "item 1 is NoneType"),
        (["ok", 5], "item 2 is int"),
        ([b"la"], "item 1 is bytes"),
        (5, "texts must be an iterable of str, not int"),
        (["a\ud800b"], "item 1 holds U+D800 at character 2, a lone surrogate"),
    ]
    for given, message in cases:
        with pytest.raises(NmtError, match=re.escape(message)):
            tr.translate(given)
    with pytest.raises(NmtError, match="2 texts but 1 prefixes"):
        tr.translate(texts, prefixes=["The"])
    with pytest.raises(NmtError, match="2 sources but 1 targets"):
        score_pairs(tr, texts, ["light"])
    assert len(score_pairs(tr, texts, ("light", "water"))) == 2


# --- long lines: translated whole, in parts (decode.long_lines) ----------------------------

SENTENCES = " ".join(["Y dijo Dios: sea la luz."] * 8)


@pytest.fixture(scope="module")
def protected_run(tmp_path_factory):
    """A model of 2 updates on the sample with protected spans (as tests/test_software.py's),
    with decode.max_input_len 12."""
    root = tmp_path_factory.mktemp("long-lines")
    rows = (SAMPLE / "train.tsv").read_text(encoding="utf-8").splitlines()[1:]
    pairs = with_spans([tuple(r.split("\t")[1:]) for r in rows[:3000]])
    train_tsv, dev_tsv = (
        write_tsv(root / "train.tsv", pairs[:2900]),
        write_tsv(root / "dev.tsv", pairs[2900:]),
    )
    cfg = data_config(train=str(train_tsv), dev=str(dev_tsv), test="", protect="all")
    preprocess(cfg, root / "data", progress=False)
    train(apply_overrides(Config(), TINY), root / "data", root / "run", progress_bar=False,
          log=lambda _: None)  # fmt: skip
    return root / "run" / "last.pt"


def test_a_long_line_is_translated_whole_in_parts(checkpoint, tmp_path):
    """A line of over 3x decode.max_input_len comes back whole: cut between words into parts
    that each fit, whose translations alone, joined, are its translation; the warning says in
    how many parts. Its n-best list begins with that join; it has no attention weights."""
    translator = Translator.from_checkpoint(checkpoint)
    warnings: list[str] = []
    translator.warn = warnings.append
    (item,) = translator.prepare([SENTENCES])
    parts = item.parts()
    assert len(item.ids) >= 3 * 12 and len(parts) >= 3
    assert all(len(part.ids) <= 12 for part in parts)
    assert [t for part in parts for t in part.ids] == item.ids  # no subword lost
    texts = [translator.src_tokenizer.decode(part.ids) for part in parts]
    assert " ".join(texts) == SENTENCES  # cut between words
    (whole,) = translator.translate([SENTENCES])
    assert whole == " ".join(filter(None, translator.translate(texts)))
    assert f"translated in {len(parts)} parts" in warnings[0] and "truncat" not in warnings[0]
    (sampled,) = translator.translate([SENTENCES], sampling="full")
    assert sampled

    data = f"Dios\n{SENTENCES}\n".encode()
    options = ("--format", "jsonl", "--beam", "2", "--nbest", "2", "--attention")
    # fp32 as `translator` below (auto is bf16 where the CPU has it: near ties of this barely
    # trained model then go another way)
    result, out = _translate(checkpoint, tmp_path, data, *options, "--precision", "fp32")
    assert result.exit_code == 0, result.output
    short, long = (json.loads(line) for line in out.read_text(encoding="utf-8").splitlines())
    assert len(short["hypotheses"]) == len(long["hypotheses"]) == 2
    assert all("attention" not in h for h in long["hypotheses"])
    (nbest,) = translator.translate_nbest([SENTENCES], beam=2, nbest=2)
    best, second = nbest.hypotheses
    assert [h["text"] for h in long["hypotheses"]] == [best.text, second.text]
    assert best.score >= second.score and best.text != second.text
    two = translator.translate(texts, beam=2)
    assert best.text == " ".join(filter(None, two))  # the parts' best first
    assert "line 2: a line translated in parts has no attention weights" in result.output


def test_a_long_line_keeps_every_protected_span_once(protected_run):
    """Spans near the start and the end of a line split into parts are all kept, each once:
    a placeholder goes to one part, and the spans are restored on the joined translation."""
    translator = Translator.from_checkpoint(protected_run)
    line = f"Abrid %s <b>ahora</b>. {SENTENCES} Escribid a a@b.org y ${{HOME}} hoy."
    (out,) = translator.translate([line])
    assert spans_of(out, Protector("all")) == spans_of(line, Protector("all"))
    (item,) = translator.prepare([line])
    assert len(item.parts()) >= 3 and len(item.masked.spans) == 5


def test_truncation_is_an_option(checkpoint, tmp_path):
    """decode.long_lines=truncate (--long-lines truncate) translates the first
    decode.max_input_len subwords only, as before."""
    translator = Translator.from_checkpoint(checkpoint)
    (item,) = translator.prepare([SENTENCES], long_lines="truncate")
    assert len(item.ids) == 12 and item.parts() == [item]
    assert "truncated to the first 12" in item.warnings[0]
    translator.cfg.decode.long_lines = "truncate"
    (truncated,) = translator.translate([SENTENCES])
    result, out = _translate(checkpoint, tmp_path, SENTENCES.encode(), "--long-lines", "truncate")
    assert result.exit_code == 0, result.output
    assert out.read_text(encoding="utf-8") == truncated + "\n"
    assert "truncated to the first 12" in result.output
    result, _ = _translate(checkpoint, tmp_path, b"Dios\n", "--long-lines", "cut")
    assert result.exit_code != 0 and "split, truncate" in result.output


def test_a_long_line_without_boundaries_is_chunked(checkpoint):
    """Sentence ends first, then commas, then spaces; a part with none is cut into chunks of
    the limit."""
    from nmt.translate.inputs import split_points

    pieces = ["▁a", "▁b", ",", "▁c", "▁d", ".", "▁e", "▁f"]
    assert split_points(pieces, 4) == [3, 6]
    assert split_points(["▁x", *["y"] * 9], 4) == [4, 8]
    translator = Translator.from_checkpoint(checkpoint)
    word = "principio" * 12
    (item,) = translator.prepare([word])
    assert item.cuts == list(range(12, len(item.ids), 12)) and len(item.cuts) >= 2
    (out,) = translator.translate([word])
    assert out


def test_a_split_line_joins_and_leaves_a_running_batch_as_one_line(checkpoint):
    """In a running batch (the server's scheduler), a split line counts as one line: its
    result comes once all its parts are done, and dropping it takes out its parts."""
    translator = Translator.from_checkpoint(checkpoint)
    items = translator.prepare([SENTENCES, "Dios", SENTENCES])
    options = translator.decode_options(beam=2)
    with translator.batch(options) as batch:
        batch.add(["long", "short", "gone"], items)
        assert len(batch) == 3 and batch.tokens == sum(len(i.ids) + len(i.cuts) + 1 for i in items)
        batch.drop(["gone"])
        done = {}
        while len(batch):
            done.update(batch.step())
        assert batch.tokens == 0 and sorted(done) == ["long", "short"]
    alone = translator.translate_prepared(items[:2], options)
    assert [r.hypotheses[0].text for r in alone] == [
        done[k].hypotheses[0].text for k in ("long", "short")
    ]
