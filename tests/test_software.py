"""Software strings end to end: preprocess --protect, training's validation, and translate with
placeholders, a glossary and --markup xml, on a model too little trained to place anything."""

import json
import xml.etree.ElementTree as ET

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from nmt.cli import app
from nmt.config import Config, apply_overrides
from nmt.data.protect import Protector, placeholder_symbols, span_fidelity, spans_of
from nmt.data.store import read_manifest
from nmt.data.tokenizer import Tokenizer
from nmt.decode.hypothesis import Hypothesis
from nmt.errors import NmtError
from nmt.preprocess import preprocess
from nmt.train import train
from nmt.translate import Prepared, Translator
from nmt.translate.forced import score_pairs
from tests.conftest import SAMPLE, data_config, with_spans, write_tsv
from tests.test_translate import TINY as TRANSLATE_TINY

runner = CliRunner()
ALL = Protector("all")
TINY = [*TRANSLATE_TINY, "train.valid_every=2", "decode.max_input_len=0"]  # validates, no cut
LINES = [
    "Could not open %s: {0}",
    "Y dijo Dios: %1$s y %2$s",
    "Sea la <b>luz</b>, y fue ${HOME} la luz.",
    "Escribid a a@b.org hoy",  # (a URL and an address glued together would read as one)
    "Visitad https://example.org/x hoy",
    "Sin nada que proteger.",
    "%d %d %s",
]


@pytest.fixture(scope="module")
def protected(tmp_path_factory):
    """The sample with spans in a third of the pairs, preprocessed with --protect all, and a
    run of 2 updates on it."""
    root = tmp_path_factory.mktemp("software")
    rows = (SAMPLE / "train.tsv").read_text(encoding="utf-8").splitlines()[1:]
    pairs = with_spans([tuple(r.split("\t")[1:]) for r in rows[:3000]])
    cfg = data_config(
        train=str(write_tsv(root / "train.tsv", pairs[:2800])),
        dev=str(write_tsv(root / "dev.tsv", pairs[2800:2900])),
        test="",
        protect="all",
    )
    preprocess(cfg, root / "data", progress=False)
    run = root / "run"
    train(apply_overrides(Config(), TINY), root / "data", run, progress_bar=False, log=print)
    return root


def test_preprocess_masks_shared_spans_and_keeps_placeholders_whole(protected):
    manifest = read_manifest(protected / "data")
    spans = manifest["cleaning"]["spans"]
    assert spans["masked"] == 2800 // 3 + 1 and spans["unmatched"] == 0
    tokenizer = Tokenizer.load(protected / "data" / "spm.model")
    ids = tokenizer.symbol_ids(placeholder_symbols())
    assert ids is not None
    assert tokenizer.encode(["abre ｟0｠ y ｟12｠"])[0][-1] == ids[12]


def test_scoring_masks_the_target_like_its_source(protected):
    """`score_pairs` on a model with protected spans: the target's spans become the source's
    placeholders, numbered as in the source (swapped arguments keep their numbers), as
    preprocessing masked the training pairs; a target whose spans differ is scored as plain
    text, with a warning."""
    translator = Translator.from_checkpoint(protected / "run" / "best.pt", "cpu", "fp32")
    warnings: list[str] = []
    translator.warn = warnings.append
    pairs = [("Y dijo Dios: %1$s y %2$s", "And God said: %2$s and %1$s"), ("Abre %s", "Open it")]
    swapped, differ = score_pairs(translator, [s for s, _ in pairs], [t for _, t in pairs])
    masked = Protector("all").mask_pair(*pairs[0])
    assert masked is not None
    want = translator.tgt_tokenizer.pieces(translator.tgt_tokenizer.encode([masked[1]])[0])
    assert swapped.pieces == [*want, "</s>"]
    assert [p for p in swapped.pieces if "｟" in p] == ["｟1｠", "｟0｠"]
    assert not any("｟" in p for p in differ.pieces) and "%s" not in "".join(differ.pieces)
    assert [w for w in warnings if "scored as plain text" in w] == [
        "warning: line 2: the target's protected spans differ from the source's; it is scored "
        "as plain text"
    ]


def test_every_output_keeps_the_sources_spans_and_would_not_without_the_constraint(
    protected, monkeypatch
):
    translator = Translator.from_checkpoint(protected / "run" / "best.pt")
    everything = Protector("all")
    for beam in (1, 4):
        outputs = translator.translate(LINES, beam=beam)
        assert span_fidelity(LINES, outputs, everything) == 1.0, outputs
        assert not any("｟" in o for o in outputs)
    monkeypatch.setattr(Translator, "constraints", lambda self, batch, masked: None)
    unconstrained = translator.translate(LINES, beam=4)
    assert span_fidelity(LINES, unconstrained, everything) < 0.5, unconstrained


def test_int8_and_the_shortlist_keep_every_span(protected):
    """The placeholder guarantee holds in int8, with and without the shortlist: one output
    per line, each with its source's spans."""
    translator = Translator.from_checkpoint(protected / "run" / "best.pt", "cpu", "int8")
    for beam in (1, 4):
        for shortlist in (False, True):
            outputs = translator.translate(LINES, beam=beam, shortlist=shortlist)
            assert len(outputs) == len(LINES)
            assert span_fidelity(LINES, outputs, Protector("all")) == 1.0, outputs
            assert not any("｟" in o for o in outputs)


def test_a_prefix_keeps_its_spans_once_and_is_written_as_given(protected):
    """A prefix's spans are its source's placeholders, emitted once in all (the prefix's and
    the search's); a prefix that holds a span its source does not, or a placeholder symbol,
    is an error, not an empty or doubled line."""
    translator = Translator.from_checkpoint(protected / "run" / "best.pt")
    sources = ["Copiar %s en {0}", "Abrir %s y %s"]
    prefixes = ["Copy  %s into", "Open %s"]
    for beam in (1, 4):
        results = translator.translate_nbest(sources, beam=beam, prefixes=prefixes)
        outputs = [r.hypotheses[0].text for r in results]
        assert [o.startswith(p) for o, p in zip(outputs, prefixes)] == [True, True], outputs
        assert span_fidelity(sources, outputs, Protector("all")) == 1.0, outputs
    for source, prefix in (("Copiar %s", "Copy %d"), ("Copiar %s", "Copy %s %s"),
                           ("Copiar", "Copy ｟0｠")):  # fmt: skip
        with pytest.raises(NmtError, match="the prefix of line 1"):
            translator.translate_nbest([source], prefixes=[prefix])


def test_validation_restores_the_spans_it_kept(protected):
    dev = (protected / "dev.tsv").read_text(encoding="utf-8").splitlines()[1:]
    sources = [row.split("\t")[1] for row in dev]
    hyps = (protected / "run" / "dev.hyp.txt").read_text(encoding="utf-8").splitlines()
    assert len(hyps) == len(sources)
    assert span_fidelity(sources, hyps, Protector("all")) == 1.0
    assert not any("｟" in h for h in hyps)


def _translate(checkpoint, tmp_path, lines, *options):
    src, out = tmp_path / "in.txt", tmp_path / "out.txt"
    src.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    result = runner.invoke(
        app, ["translate", str(checkpoint), "-i", str(src), "-o", str(out), *options]
    )
    return result, out


def test_glossary_terms_are_translated_as_given_and_reported(protected, tmp_path):
    glossary = tmp_path / "terms.tsv"
    glossary.write_text("# a comment\nDios\tGOD\nla luz\tthe LIGHT\nluz\tlight\n\n")
    lines = ["Y dijo Dios: sea la luz", "Dioses y luces", "%s luz"]
    result, out = _translate(
        protected / "run" / "best.pt", tmp_path, lines, "--glossary", str(glossary),
        "--format", "jsonl",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["glossary"] for r in records] == [
        [{"source": "Dios", "target": "GOD"}, {"source": "la luz", "target": "the LIGHT"}],
        [],  # not whole words: no term applies
        [{"source": "luz", "target": "light"}],
    ]
    first = records[0]["hypotheses"][0]["text"]
    assert first.count("GOD") == 1 and first.count("the LIGHT") == 1
    assert records[2]["hypotheses"][0]["text"].count("%s") == 1


@pytest.mark.parametrize(
    "content, problem",
    [
        ("Dios\n", "got 1 field"),
        ("Dios\tGOD\tDIEU\n", "got 3 field"),
        ("\tGOD\n", "got an empty term"),
        ("Dios\tGOD\nDios\tDIEU\n", "given twice"),
        ("\n# nothing\n", "no terms"),
    ],
)
def test_a_bad_glossary_is_an_error_naming_its_line(protected, tmp_path, content, problem):
    glossary = tmp_path / "terms.tsv"
    glossary.write_text(content)
    result, out = _translate(
        protected / "run" / "best.pt", tmp_path, ["hola"], "--glossary", str(glossary)
    )
    assert result.exit_code == 2 and problem in result.output, result.output
    assert str(glossary) in result.output and not out.exists()


def test_glossary_and_markup_need_a_model_trained_with_protection(sample_dir, tmp_path):
    run = tmp_path / "plain"
    train(apply_overrides(Config(), TINY), sample_dir, run, progress_bar=False, log=print)
    glossary = tmp_path / "terms.tsv"
    glossary.write_text("Dios\tGOD\n")
    for option in (["--glossary", str(glossary)], ["--markup", "xml"]):
        result, _ = _translate(run / "last.pt", tmp_path, ["hola"], *option)
        assert result.exit_code == 2 and "trained without protected spans" in result.output


def test_markup_xml_gives_well_formed_xml_with_the_same_tags(protected, tmp_path):
    lines = [
        'Elija <item type="menuitem">Formato - <emph>Carácter</emph></item> &amp; listo',
        "Sea <b>la <i>luz</i> y</b> fue <br/> la luz",
        "Sin etiquetas & con un signo <",
        "<emph>Dios</emph>",
        "<p>sin cerrar y </b> sin abrir",  # not well-formed: said, not hidden
    ]
    result, out = _translate(protected / "run" / "best.pt", tmp_path, lines, "--markup", "xml")
    assert result.exit_code == 0, result.output
    warned = [line for line in result.output.splitlines() if "no partner tag" in line]
    assert warned == [
        "warning: line 5: <p>, </b> has no partner tag; the line is not well-formed XML, and "
        "its translation will not be either"
    ], result.output
    outputs = out.read_text(encoding="utf-8").splitlines()[:4]
    for line in outputs:
        ET.fromstring(f"<p>{line}</p>")  # raises if not well-formed
    assert span_fidelity(lines[:2] + lines[3:4], outputs[:2] + outputs[3:], Protector("xml")) == 1.0


def test_a_hypothesis_that_spells_out_a_span_goes_after_those_that_do_not(protected):
    """The search guarantees the placeholders, but a model may also write a span (`%d`, or
    here a URL) from ordinary subwords: such a hypothesis ranks after the clean ones, whatever
    its score."""
    translator = Translator.from_checkpoint(protected / "run" / "best.pt")
    masked = translator.protector.mask("Copiar %s")
    tokens = translator.tgt_tokenizer.encode(["Copy ｟0｠ and www.dios.org", "Copy ｟0｠"])
    hyps = [Hypothesis(tokens[0], -1.0), Hypothesis(tokens[1], -2.0)]
    result = translator.result(Prepared(masked, [], []), hyps, nbest=2)
    assert [t.text for t in result.hypotheses] == ["Copy %s", "Copy %s and www.dios.org"]
    assert translator.protector.keeps(masked, "Copia %s")
    assert not translator.protector.keeps(masked, "Copia")


_SPAN = st.sampled_from(["%s", "%d", "%1$s", "{0}", "{name}", "${HOME}", "&amp;", "a@b.org",
                         "https://x.org/a", "%(n)d", "<br/>"])  # fmt: skip
_WORD = st.sampled_from(["Dios", "la", "luz", "tierra", "y", "dijo", "agua", "cielos"])


@settings(max_examples=30, deadline=None)
@given(st.lists(st.one_of(_SPAN, _WORD), min_size=1, max_size=14), st.sampled_from([1, 3]))
def test_random_lines_keep_their_spans_through_translation(protected, parts, beam):
    """Random lines of words and spans (repeated spans too) through the whole translator: the
    output holds the source's spans as a multiset, for greedy and beam search."""
    translator = Translator.from_checkpoint(protected / "run" / "best.pt")
    line = " ".join(parts)
    [output] = translator.translate([line], beam=beam)
    assert spans_of(output, ALL) == spans_of(line, ALL), (line, output)
